-- Tamper-evident audit trail: each row carries the SHA-256 of its predecessor's hash and its
-- own content, chained per scope (a tenant, or 'platform' for rows no tenant owns). Editing,
-- deleting or reordering a row breaks the chain from that row on; `leadq audit verify` names
-- the first broken row.

alter table audit_log add column prev_hash bytea;
alter table audit_log add column hash bytea;

-- The canonical content of a row: every field but the id, in a fixed order and format.
create function audit_row_hash(prev bytea, tenant_id uuid, actor text, action text,
                               subject text, outcome text, correlation_id text,
                               details jsonb, at timestamptz) returns bytea
language sql immutable as $$
    select sha256(coalesce(prev, ''::bytea) || convert_to(concat_ws(chr(31),
        coalesce(tenant_id::text, 'platform'), actor, action, subject, outcome, correlation_id,
        details::text, to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')), 'UTF8'))
$$;

create function audit_log_chain() returns trigger language plpgsql as $$
declare
    scope text := coalesce(new.tenant_id::text, 'platform');
    prev bytea;
begin
    -- One writer per chain at a time, so two inserts never fork it.
    perform pg_advisory_xact_lock(hashtextextended('audit:' || scope, 0));
    select a.hash into prev from audit_log a
     where coalesce(a.tenant_id::text, 'platform') = scope
     order by a.id desc limit 1;
    new.prev_hash := prev;
    new.hash := audit_row_hash(prev, new.tenant_id, new.actor, new.action, new.subject,
                               new.outcome, new.correlation_id, new.details, new.at);
    return new;
end;
$$;

-- Chain what exists already (in id order), then keep chaining on insert.
alter table audit_log disable trigger audit_log_append_only;
do $$
declare
    r record;
    last_hash jsonb := '{}'::jsonb;
    prev bytea;
    h bytea;
begin
    for r in select * from audit_log order by id loop
        prev := decode(last_hash ->> coalesce(r.tenant_id::text, 'platform'), 'hex');
        h := audit_row_hash(prev, r.tenant_id, r.actor, r.action, r.subject, r.outcome,
                            r.correlation_id, r.details, r.at);
        update audit_log set prev_hash = prev, hash = h where id = r.id;
        last_hash := last_hash || jsonb_build_object(coalesce(r.tenant_id::text, 'platform'),
                                                     encode(h, 'hex'));
    end loop;
end;
$$;
alter table audit_log enable trigger audit_log_append_only;
alter table audit_log alter column hash set not null;

create trigger audit_log_chain before insert on audit_log
    for each row execute function audit_log_chain();
