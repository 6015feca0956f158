-- Leads as the Telegram bot collects them, with their latest score.
create table leads (
    tenant_id    uuid not null references tenants (id),
    external_id  text not null,
    id           uuid not null default gen_random_uuid(),
    source       text not null,
    name         text,
    username     text,
    phone        text,
    email        text,
    answers      jsonb not null default '{}'::jsonb,
    score        integer check (score between 0 and 100),
    tier         text check (tier in ('hot', 'warm', 'cold')),
    reasons      jsonb not null default '[]'::jsonb,
    scored_at    timestamptz,
    -- The message that produced the current version; a replayed job finds its own id here.
    last_message_id text,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (tenant_id, external_id),
    unique (id)
);
