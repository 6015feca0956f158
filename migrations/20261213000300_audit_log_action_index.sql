-- no-transaction
-- `GET /v1/audit?action=…` (and the audit reads of issue 22) pages one tenant's entries of one
-- action, newest first: this keeps that a range read instead of a scan of the tenant's whole
-- trail. Built concurrently (outside a transaction, hence the first line), so audit writes go
-- on meanwhile. An interrupted build leaves an invalid index behind: drop it
-- (`drop index concurrently audit_log_tenant_action`) and migrate again.
create index concurrently audit_log_tenant_action on audit_log (tenant_id, action, id);
