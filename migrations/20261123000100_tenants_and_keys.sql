-- Tenants and their API keys.
create table tenants (
    id          uuid primary key default gen_random_uuid(),
    slug        text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    status      text not null default 'active' check (status in ('active', 'suspended')),
    created_at  timestamptz not null default now()
);

-- An API key is `lq_<prefix>_<secret>`. Only the prefix (to find the row) and a SHA-256 of the
-- whole key are stored: keys are 256-bit random, so a fast hash is enough and a leaked table
-- does not leak usable keys.
create table api_keys (
    id            uuid primary key default gen_random_uuid(),
    tenant_id     uuid not null references tenants (id),
    prefix        text not null unique,
    key_hash      bytea not null,
    scopes        text[] not null,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    created_at    timestamptz not null default now()
);
create index api_keys_tenant on api_keys (tenant_id);
