-- The audit chain, keyed and sealed in batches (docs/audit.md).
--
-- Until now every insert linked its row to the chain in a trigger, under an advisory lock per
-- chain held to commit: all of a tenant's jobs queued behind one lock. From here on, rows are
-- inserted unlinked, in the handler's own transaction (so a change and its audit row still
-- commit together, or not at all), and a sealer links committed rows in batches, one short
-- transaction per batch: `seal_seq` numbers them 1, 2, … within their chain, and `mac` is an
-- HMAC-SHA256 under an audit key that is not stored in the database (`LEADQ_AUDIT_KEYS`,
-- `key_id` names it), over the previous link, the sequence number and the row's canonical
-- bytes (`audit_canonical`). Rows chained before this migration keep their sha256 links
-- (`prev_hash`, `hash`); the first sealed row of a chain links to the last of them.

alter table audit_log alter column hash drop not null;
-- The inserting transaction: the sealer takes only rows of transactions that finished before
-- any still running began, so a late commit of a lower id is never skipped.
alter table audit_log add column xid xid8 not null default pg_current_xact_id();
alter table audit_log add column seal_seq bigint;
alter table audit_log add column key_id text;
alter table audit_log add column mac bytea;

create unique index audit_log_seal_seq
    on audit_log (coalesce(tenant_id::text, 'platform'), seal_seq) where seal_seq is not null;
create index audit_log_unsealed
    on audit_log (coalesce(tenant_id::text, 'platform'), id) where hash is null and mac is null;

drop trigger audit_log_chain on audit_log;

-- What a row's MAC covers, byte for byte (the legacy chain covered the same fields).
create function audit_canonical(tenant_id uuid, actor text, action text, subject text,
                                outcome text, correlation_id text, details jsonb,
                                at timestamptz) returns bytea
language sql immutable as $$
    select convert_to(concat_ws(chr(31),
        coalesce(tenant_id::text, 'platform'), actor, action, subject, outcome, correlation_id,
        details::text, to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')), 'UTF8')
$$;

-- Append-only, but for exactly one transition: sealing, once. An unsealed row may get its
-- seal_seq, key_id and mac set, with every other column unchanged; nothing else is allowed.
create or replace function audit_log_is_append_only() returns trigger language plpgsql as $$
begin
    if tg_op = 'UPDATE'
       and old.mac is null and old.hash is null and old.seal_seq is null
       and new.mac is not null and new.seal_seq is not null and new.key_id is not null
       and (new.id, new.tenant_id, new.actor, new.action, new.subject, new.outcome,
            new.correlation_id, new.details, new.at, new.xid, new.prev_hash, new.hash)
           is not distinct from
           (old.id, old.tenant_id, old.actor, old.action, old.subject, old.outcome,
            old.correlation_id, old.details, old.at, old.xid, old.prev_hash, old.hash) then
        return new;
    end if;
    raise exception 'audit_log is append-only (% refused)', tg_op;
end;
$$;

-- The sealer finds which chains have rows to seal under the scope 'audit-sealer', which shows
-- unsealed rows of every chain and nothing else (sealed rows stay visible to their own scope
-- only). They are seconds old, and carry ids and codes, never personal data.
create policy audit_sealer_scan on audit_log for select
    using (leadq_scope() = 'audit-sealer' and hash is null and mac is null);
