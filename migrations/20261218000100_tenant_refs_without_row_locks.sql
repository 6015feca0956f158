-- The tables every job writes reference their tenant without locking the tenant's row.
--
-- A foreign key checks its parent with `select … for key share` on the parent row, held until
-- the transaction ends. Every concurrent job of one tenant takes that lock on the same
-- `tenants` row, and PostgreSQL records several holders of one row lock as a MultiXact: each
-- new holder copies the member list, writes it to the WAL and contends on the MultiXact
-- buffers. On the real lead path (`leadq bench --mode e2e --tenants 1 --c 32`) that made the
-- first insert of a job (`leads`) take 1.6 ms and `lead_scores` 1.2 ms, against 0.09 ms each
-- without it, and doubled the WAL written per lead (11.0 kB against 5.8 kB). See docs/bench.md.
--
-- A tenant is never deleted (nothing in leadq deletes one: a tenant is suspended, its leads are
-- erased one by one, its audit chain stays), so the parent check needs no lock: a row naming a
-- tenant that exists now will name one that exists at commit and after. This migration makes that an enforced rule (a trigger refuses DELETE and TRUNCATE of
-- `tenants`) and replaces the foreign keys of the per-job tables by a trigger that checks the
-- tenant exists, with the foreign key's error (SQLSTATE 23503), on every insert and on every
-- update of `tenant_id`. The other tables keep their foreign keys: they are written a few
-- times a tenant, not once per job.
create function leadq_tenant_must_exist() returns trigger
    language plpgsql as $$
begin
    if new.tenant_id is not null
       and not exists (select 1 from tenants where id = new.tenant_id) then
        raise exception 'tenant % does not exist (%.tenant_id)', new.tenant_id, tg_table_name
            using errcode = 'foreign_key_violation';
    end if;
    return new;
end;
$$;

create function leadq_tenants_are_kept() returns trigger
    language plpgsql as $$
begin
    raise exception 'tenants are never deleted: suspend the tenant and erase its data instead'
        using errcode = 'restrict_violation';
end;
$$;

create trigger tenants_are_kept before delete on tenants
    for each row execute function leadq_tenants_are_kept();
create trigger tenants_are_not_truncated before truncate on tenants
    for each statement execute function leadq_tenants_are_kept();

alter table leads drop constraint leads_tenant_id_fkey;
alter table lead_scores drop constraint lead_scores_tenant_id_fkey;
alter table lead_messages drop constraint lead_messages_tenant_id_fkey;
alter table crm_sync_state drop constraint crm_sync_state_tenant_id_fkey;
alter table audit_log drop constraint audit_log_tenant_id_fkey;
alter table job_runs drop constraint job_runs_tenant_id_fkey;

create trigger tenant_must_exist before insert or update of tenant_id on leads
    for each row execute function leadq_tenant_must_exist();
create trigger tenant_must_exist before insert or update of tenant_id on lead_scores
    for each row execute function leadq_tenant_must_exist();
create trigger tenant_must_exist before insert or update of tenant_id on lead_messages
    for each row execute function leadq_tenant_must_exist();
create trigger tenant_must_exist before insert or update of tenant_id on crm_sync_state
    for each row execute function leadq_tenant_must_exist();
create trigger tenant_must_exist before insert or update of tenant_id on audit_log
    for each row execute function leadq_tenant_must_exist();
create trigger tenant_must_exist before insert or update of tenant_id on job_runs
    for each row execute function leadq_tenant_must_exist();

-- The API keeps each tenant's limits for a moment (`leadq_jobs::ops::limits::LimitsCache`):
-- a change notifies every API process like the authorization facts do.
create trigger authz_changed after insert or update or delete on tenant_limits
    for each row execute function leadq_authz_changed();
