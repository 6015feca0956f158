-- Fix: the audit chain could fork under concurrent writers of one scope.
--
-- The row id came from the identity default, drawn *before* the BEFORE INSERT trigger took
-- the scope's advisory lock. Two transactions could draw ids 2 and 3, and the one holding 3
-- take the lock first: row 3 chained to row 1, row 2 to row 3, and `leadq audit verify`
-- (which walks the chain in id order) reported row 2 as broken although nobody had touched
-- it. Now the id is drawn under the lock, so within a scope ids follow the chain order.

create or replace function audit_log_chain() returns trigger language plpgsql as $$
declare
    scope text := coalesce(new.tenant_id::text, 'platform');
    prev bytea;
begin
    -- One writer per chain at a time, so two inserts never fork it; held to commit.
    perform pg_advisory_xact_lock(hashtextextended('audit:' || scope, 0));
    new.id := nextval(pg_get_serial_sequence('audit_log', 'id'));
    select a.hash into prev from audit_log a
     where coalesce(a.tenant_id::text, 'platform') = scope
     order by a.id desc limit 1;
    new.prev_hash := prev;
    new.hash := audit_row_hash(prev, new.tenant_id, new.actor, new.action, new.subject,
                               new.outcome, new.correlation_id, new.details, new.at);
    return new;
end;
$$;
