-- The worker keeps what authorization reads (tenant status, kind entitlements, API keys,
-- webhook integrations, operators) for a couple of seconds (`leadq_jobs::authz::cache`).
-- These triggers tell every listening worker the moment such a row changes, so a revoked
-- key, a suspended tenant or a disabled operator is refused from the next job on instead of
-- after the cache's TTL. The payload is the tenant's id, or `*` for a change that concerns
-- every tenant (an operator). Delivered on commit, never for a rolled-back change.
create function leadq_authz_changed() returns trigger
    language plpgsql as $$
declare
    row record;
begin
    if tg_op = 'DELETE' then
        row := old;
    else
        row := new;
    end if;
    if tg_table_name = 'tenants' then
        perform pg_notify('leadq_authz', row.id::text);
    elsif tg_table_name = 'operators' then
        perform pg_notify('leadq_authz', '*');
    else
        perform pg_notify('leadq_authz', row.tenant_id::text);
    end if;
    return null;
end;
$$;

create trigger authz_changed after insert or update or delete on tenants
    for each row execute function leadq_authz_changed();
-- Not on `last_used_at`, which authentication touches once a minute per key.
create trigger authz_changed
    after insert or delete or update of tenant_id, scopes, expires_at, revoked_at on api_keys
    for each row execute function leadq_authz_changed();
create trigger authz_changed after insert or update or delete on tenant_job_kinds
    for each row execute function leadq_authz_changed();
create trigger authz_changed after insert or update or delete on tenant_integrations
    for each row execute function leadq_authz_changed();
create trigger authz_changed after insert or update or delete on operators
    for each row execute function leadq_authz_changed();
