-- Registered platform operators. An operator token (LEADQ_OPERATOR_TOKENS) is honoured only
-- for an operator registered here and enabled, and an `operator:<name>` principal in a signed
-- message runs a kind only if its operator holds the kind's permission
-- (leadq_jobs::kinds::required_permission). Managed with `leadq operator add|list|disable|enable`,
-- each change audited. A platform table: no tenant owns an operator, so no row-level security.
create table operators (
    name         text primary key check (name ~ '^[A-Za-z0-9][A-Za-z0-9-]{0,62}$'),
    permissions  text[] not null default '{}'
                 check (permissions <@ array['dlq', 'limits', 'keys', 'tenants', 'console']),
    disabled     boolean not null default false,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
