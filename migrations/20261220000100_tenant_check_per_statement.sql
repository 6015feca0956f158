-- The per-job tables check that an inserted row's tenant exists once a statement, not once a row.
--
-- `20261218000100_tenant_refs_without_row_locks.sql` replaced their foreign keys on `tenant_id`
-- by a row trigger, `leadq_tenant_must_exist`, which looks the tenant up for every row. The
-- worker writes its jobs in batches (a tenant's leads, scores and audit rows in one statement,
-- every tenant's `job_runs` rows in one upsert), so that was four lookups and four trigger calls
-- a lead: on the real lead path (`leadq bench --mode e2e --tenants 1`) 240,286 calls and 4.9 s
-- of the 24.8 s PostgreSQL spent on 60,071 leads (`pg_stat_user_functions`, docs/bench.md).
--
-- An insert now checks the rows it inserted as a set, after the statement, from its transition
-- table: one call and one anti-join a statement, whatever its rows. The error is the same (the
-- foreign key's SQLSTATE 23503, naming a missing tenant and the table) and fails the whole
-- statement, as before. A change of `tenant_id` keeps the row trigger (no statement of leadq
-- changes it; transition tables cannot be limited to `update of tenant_id`, and the sealer's
-- updates of `audit_log` must not pay for a check of every row they touch).
create function leadq_inserted_tenants_must_exist() returns trigger
    language plpgsql as $$
declare
    missing uuid;
begin
    -- `inserted`: the statement's new rows (each trigger below names its transition table so).
    select i.tenant_id into missing
      from inserted i
     where i.tenant_id is not null
       and not exists (select 1 from tenants t where t.id = i.tenant_id)
     limit 1;
    if found then
        raise exception 'tenant % does not exist (%.tenant_id)', missing, tg_table_name
            using errcode = 'foreign_key_violation';
    end if;
    return null;
end;
$$;

drop trigger tenant_must_exist on leads;
create trigger tenant_must_exist before update of tenant_id on leads
    for each row execute function leadq_tenant_must_exist();
create trigger tenants_inserted_must_exist after insert on leads
    referencing new table as inserted
    for each statement execute function leadq_inserted_tenants_must_exist();

drop trigger tenant_must_exist on lead_scores;
create trigger tenant_must_exist before update of tenant_id on lead_scores
    for each row execute function leadq_tenant_must_exist();
create trigger tenants_inserted_must_exist after insert on lead_scores
    referencing new table as inserted
    for each statement execute function leadq_inserted_tenants_must_exist();

drop trigger tenant_must_exist on lead_messages;
create trigger tenant_must_exist before update of tenant_id on lead_messages
    for each row execute function leadq_tenant_must_exist();
create trigger tenants_inserted_must_exist after insert on lead_messages
    referencing new table as inserted
    for each statement execute function leadq_inserted_tenants_must_exist();

drop trigger tenant_must_exist on crm_sync_state;
create trigger tenant_must_exist before update of tenant_id on crm_sync_state
    for each row execute function leadq_tenant_must_exist();
create trigger tenants_inserted_must_exist after insert on crm_sync_state
    referencing new table as inserted
    for each statement execute function leadq_inserted_tenants_must_exist();

drop trigger tenant_must_exist on audit_log;
create trigger tenant_must_exist before update of tenant_id on audit_log
    for each row execute function leadq_tenant_must_exist();
create trigger tenants_inserted_must_exist after insert on audit_log
    referencing new table as inserted
    for each statement execute function leadq_inserted_tenants_must_exist();

drop trigger tenant_must_exist on job_runs;
create trigger tenant_must_exist before update of tenant_id on job_runs
    for each row execute function leadq_tenant_must_exist();
create trigger tenants_inserted_must_exist after insert on job_runs
    referencing new table as inserted
    for each statement execute function leadq_inserted_tenants_must_exist();
