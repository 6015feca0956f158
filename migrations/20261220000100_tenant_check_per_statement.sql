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
-- statement, as before; raised after the statement's rows, so a statement that also breaks
-- another rule (row-level security, a unique key) reports that one first. Rows an upsert
-- does not insert (`on conflict`) are not checked: they keep the tenant they were inserted
-- with, checked then. A change of `tenant_id` keeps the row trigger (no statement of leadq
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

-- Dropping and creating a trigger locks its table until this migration commits: better to fail
-- (and be run again) than to hold every job's writes behind a long transaction.
set local lock_timeout = '10s';

-- For each per-job table: the insert check per statement, the row trigger for updates only.
do $$
declare
    t text;
begin
    foreach t in array array['leads', 'lead_scores', 'lead_messages', 'crm_sync_state',
                             'audit_log', 'job_runs'] loop
        execute format('drop trigger tenant_must_exist on %I', t);
        execute format('create trigger tenant_must_exist before update of tenant_id on %I
                            for each row execute function leadq_tenant_must_exist()', t);
        execute format('create trigger tenants_inserted_must_exist after insert on %I
                            referencing new table as inserted
                            for each statement execute function leadq_inserted_tenants_must_exist()',
                       t);
    end loop;
end;
$$;
