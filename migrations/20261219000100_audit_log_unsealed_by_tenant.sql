-- no-transaction
-- The sealer's reads of one chain, served by indexes that row-level security lets them use.
--
-- Under row-level security a query's own conditions reach an index ahead of the policies only
-- when they are leakproof. `coalesce(tenant_id::text, 'platform') = $1`, the key of
-- `audit_log_unsealed` and `audit_log_seal_seq`, is not (the uuid-to-text cast is not marked
-- leakproof), so the sealer's reads scanned those indexes whole: every chain's unsealed rows
-- for each batch, every sealed row for each tail check. With 50 chains that was 6–7 ms a call,
-- growing with the table (docs/bench.md). `tenant_id = $1` and `tenant_id is null` are
-- leakproof, so these indexes are keyed by `tenant_id` (the platform chain is its nulls).
-- `audit_log_seal_seq` stays: it is what keeps a chain's sequence numbers unique.
-- `audit_log_unsealed` is what the previous release's sealer reads; drop it in a later release.
-- Built concurrently (outside a transaction, hence the first line), so audit rows go on being
-- written meanwhile. An interrupted build leaves an invalid index behind: drop it
-- (`drop index concurrently <name>`) and migrate again. One index per file: a file is one
-- query, and PostgreSQL runs the statements of one query as one transaction.
create index concurrently audit_log_unsealed_by_tenant
    on audit_log (tenant_id, id) where hash is null and mac is null;
