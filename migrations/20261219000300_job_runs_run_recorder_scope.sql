-- The run recorder (`worker/src/runlog.rs`) commits a batch of `job_runs` rows of many tenants.
-- Under each tenant's own scope that was one upsert per tenant per batch: with 50 tenants
-- holding work, nearly a statement per row (docs/bench.md). Under the scope `run-recorder` it
-- may write — and read, as its upserts must — `job_runs` rows of every tenant, and no row of any
-- other table. Like the audit sealer's scope, this is a guard against the application's own
-- mistakes, not a privilege: the runtime role can set any scope.
create policy run_recorder on job_runs
    using (leadq_scope() = 'run-recorder')
    with check (leadq_scope() = 'run-recorder');
