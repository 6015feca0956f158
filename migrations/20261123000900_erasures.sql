-- Right to be forgotten: a lead's personal data is deleted, and a tombstone makes sure a job
-- created before the erasure (already running, or retried later) cannot bring it back.
create table erasures (
    tenant_id    uuid not null references tenants (id),
    external_id  text not null,
    erased_at    timestamptz not null default now(),
    primary key (tenant_id, external_id)
);
alter table erasures enable row level security;
alter table erasures force row level security;
create policy tenant_isolation on erasures
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());
