-- no-transaction
-- Finding a job by its producer's message id (the console's "find a job",
-- `GET /v1/jobs?message_id=…&tenant=…`) reads one tenant's row of that message id: this keeps
-- it an index read once the message's dedupe mark has expired in Redis. Built concurrently
-- (outside a transaction, hence the first line), so `job_runs` writes go on meanwhile. An
-- interrupted build leaves an invalid index behind: drop it
-- (`drop index concurrently job_runs_tenant_message`) and migrate again.
create index concurrently job_runs_tenant_message on job_runs (tenant_id, message_id);
