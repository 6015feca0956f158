-- Per-tenant ingest limits and quotas. No row means the platform defaults
-- (leadq_jobs::limits::Limits::default). Changed only by the update_billing_limit job.
create table tenant_limits (
    tenant_id             uuid primary key references tenants (id),
    ingest_per_second     integer not null check (ingest_per_second > 0),
    ingest_burst          integer not null check (ingest_burst > 0),
    leads_per_day         integer not null check (leads_per_day > 0),
    updated_at            timestamptz not null default now()
);
alter table tenant_limits enable row level security;
alter table tenant_limits force row level security;
create policy tenant_isolation on tenant_limits
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());
