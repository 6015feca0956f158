-- Row-level security on every tenant-owned table.
--
-- Each transaction says whom it acts for with
--     select set_config('leadq.tenant_id', '<tenant uuid>' | 'platform', true)
-- (leadq_platform::db::begin is the one place that does it). A query that forgets its
-- `where tenant_id = …` still sees only that tenant's rows, and writes for another tenant are
-- refused. FORCE applies the policies to the table owner too; the runtime role must be
-- neither superuser nor BYPASSRLS (leadq checks at start-up). Without the setting, nothing is
-- visible.

create function leadq_scope() returns text language sql stable as $$
    select coalesce(nullif(current_setting('leadq.tenant_id', true), ''), '-')
$$;

alter table leads enable row level security;
alter table leads force row level security;
create policy tenant_isolation on leads
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());

alter table job_runs enable row level security;
alter table job_runs force row level security;
create policy tenant_isolation on job_runs
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());

alter table tenant_job_kinds enable row level security;
alter table tenant_job_kinds force row level security;
create policy tenant_isolation on tenant_job_kinds
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());

-- Platform-level audit rows (tenant_id null) belong to the 'platform' scope.
alter table audit_log enable row level security;
alter table audit_log force row level security;
create policy tenant_isolation on audit_log
    using (coalesce(tenant_id::text, 'platform') = leadq_scope())
    with check (coalesce(tenant_id::text, 'platform') = leadq_scope());

-- Authentication must find a key before it knows the tenant: a transaction that names the
-- key prefix it looks up (leadq.key_prefix) may see that one key, and nothing else.
alter table api_keys enable row level security;
alter table api_keys force row level security;
create policy tenant_isolation on api_keys
    using (tenant_id::text = leadq_scope()
           or prefix = nullif(current_setting('leadq.key_prefix', true), ''))
    with check (tenant_id::text = leadq_scope());
