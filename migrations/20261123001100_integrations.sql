-- The three integrations (Chatwoot webhooks, the Telegram lead bot, the CRM) and what the
-- typed workers keep about leads: versions, score history, chat messages, CRM sync state.
--
-- Secrets are never stored in clear: the Chatwoot webhook secret is needed as an HMAC key, so
-- it is sealed (ChaCha20-Poly1305 with the data keys, bound to tenant and field); the Telegram
-- secret token is only ever compared, so only its SHA-256 is kept; CRM credentials and cached
-- access tokens are sealed.

create table tenant_integrations (
    tenant_id             uuid primary key references tenants (id),
    chatwoot_account_id   bigint check (chatwoot_account_id > 0),
    chatwoot_secret       text,
    telegram_secret_sha256 bytea check (octet_length(telegram_secret_sha256) = 32),
    updated_at            timestamptz not null default now()
);

create table crm_connections (
    tenant_id          uuid primary key references tenants (id),
    provider           text not null default 'hubspot' check (provider in ('hubspot')),
    base_url           text not null check (base_url ~ '^https?://'),
    id_property        text not null default 'email' check (id_property ~ '^[a-z][a-z0-9_]{0,99}$'),
    batch_size         integer not null default 100 check (batch_size between 1 and 100),
    auth_kind          text not null check (auth_kind in ('private_app', 'oauth')),
    credentials        text not null,
    access_token       text,
    access_expires_at  timestamptz,
    -- Set when the CRM said (daily 429) or showed (window exhausted) that calls must wait.
    paused_until       timestamptz,
    pause_reason       text,
    updated_at         timestamptz not null default now()
);

-- Scoring weights (rule -> maximum points) and tier thresholds. No row: the defaults.
create table scoring_rules (
    tenant_id       uuid primary key references tenants (id),
    weights         jsonb not null default '{}'::jsonb,
    hot_threshold   integer not null default 70,
    warm_threshold  integer not null default 40,
    updated_at      timestamptz not null default now(),
    check (0 < warm_threshold and warm_threshold <= hot_threshold and hot_threshold <= 100)
);

-- A lead's version counts the changes the CRM cares about (contact fields, answers, campaign,
-- score); conversation state and chat messages are kept beside it.
alter table leads
    add column version             bigint not null default 0,
    add column campaign            text,
    add column conversation_id     bigint,
    add column conversation_status text,
    add column conversation_at     timestamptz,
    add column qualified_at        timestamptz;

create table lead_scores (
    tenant_id   uuid not null references tenants (id),
    lead_id     uuid not null references leads (id) on delete cascade,
    version     bigint not null,
    score       integer not null check (score between 0 and 100),
    tier        text not null check (tier in ('hot', 'warm', 'cold')),
    reasons     jsonb not null,
    message_id  text not null,
    scored_at   timestamptz not null default now(),
    primary key (lead_id, version)
);
create index lead_scores_by_tenant on lead_scores (tenant_id, scored_at);

-- Chat messages attached to a lead (Chatwoot incoming messages). Keyed by the source's own
-- ids, so a replayed event attaches nothing twice.
create table lead_messages (
    tenant_id        uuid not null references tenants (id),
    lead_id          uuid not null references leads (id) on delete cascade,
    source           text not null,
    source_id        text not null,
    conversation_id  bigint,
    content          text,
    sent_at          timestamptz not null,
    primary key (tenant_id, source, source_id)
);
create index lead_messages_by_lead on lead_messages (lead_id);

-- One row per lead the CRM must hear about. `wanted_version` is the newest lead version to
-- send, `synced_version` the newest the CRM confirmed. A crm_sync job claims pending rows of
-- its tenant (its own first) for one batch call; the claim expires, so a killed worker
-- strands nothing.
create table crm_sync_state (
    tenant_id        uuid not null references tenants (id),
    lead_id          uuid primary key references leads (id) on delete cascade,
    wanted_version   bigint not null,
    synced_version   bigint not null default 0,
    failed_version   bigint,
    failure_code     text,
    claimed_by       uuid,
    claim_until      timestamptz,
    attempts         integer not null default 0,
    crm_id           text,
    updated_at       timestamptz not null default now()
);
create index crm_sync_pending on crm_sync_state (tenant_id, updated_at)
    where synced_version < wanted_version;

alter table tenant_integrations enable row level security;
alter table tenant_integrations force row level security;
create policy tenant_isolation on tenant_integrations
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());

alter table crm_connections enable row level security;
alter table crm_connections force row level security;
create policy tenant_isolation on crm_connections
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());

alter table scoring_rules enable row level security;
alter table scoring_rules force row level security;
create policy tenant_isolation on scoring_rules
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());

alter table lead_scores enable row level security;
alter table lead_scores force row level security;
create policy tenant_isolation on lead_scores
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());

alter table lead_messages enable row level security;
alter table lead_messages force row level security;
create policy tenant_isolation on lead_messages
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());

alter table crm_sync_state enable row level security;
alter table crm_sync_state force row level security;
create policy tenant_isolation on crm_sync_state
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());
