-- Per-tenant entitlement to each job kind. No row means the kind is enabled.
-- 'shadow' runs the job without side effects and records the would-be outcome.
create table tenant_job_kinds (
    tenant_id   uuid not null references tenants (id),
    kind        text not null,
    mode        text not null check (mode in ('enabled', 'shadow', 'disabled')),
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, kind)
);
