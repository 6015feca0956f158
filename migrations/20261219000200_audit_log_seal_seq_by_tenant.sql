-- no-transaction
-- The sealer's tail check, keyed by `tenant_id` so row-level security lets it use the index:
-- see 20261219000100_audit_log_unsealed_by_tenant.sql for why. Built concurrently, alone in
-- its file (an interrupted build: `drop index concurrently audit_log_seal_seq_by_tenant`, then
-- migrate again).
create index concurrently audit_log_seal_seq_by_tenant
    on audit_log (tenant_id, seal_seq) where seal_seq is not null;
