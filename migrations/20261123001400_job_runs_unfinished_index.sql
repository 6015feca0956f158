-- no-transaction
-- `job_runs_reconcile` looks for each tenant's runs left unfinished; they are few, so a
-- partial index keeps that a lookup instead of a scan of the tenant's whole history. Built
-- concurrently (outside a transaction, hence the first line), so `job_runs` writes go on
-- meanwhile on a large table. An interrupted build leaves an invalid index behind: drop it
-- (`drop index concurrently job_runs_unfinished`) and migrate again.
create index concurrently job_runs_unfinished on job_runs (tenant_id, updated_at)
    where status in ('running', 'retrying');
