-- no-transaction
-- The CRM rows a `crm_sync` batch can claim: pending (a version wanted and not synced) and not
-- failed for good at the wanted version. `crm_sync_pending` also holds the rows that failed for
-- good, which stay pending until the lead changes again; their failure time makes them older
-- than the rows waiting, so a claim walking that index in order (oldest change first) read
-- through every one of them first — 2,000 rows for a batch of 10 in
-- `crm::a_claim_reads_its_batch_not_the_tenants_backlog`. This index leaves them out; the
-- claim (`leadq_jobs::integrations::hubspot::claim`) and the reconcile schedule
-- (`leadq_jobs::ops::maintenance::crm_reconcile`) state its predicate word for word so that the
-- planner can use it. (`failed_version` is only ever set to the version then wanted, and
-- `wanted_version` only grows: "not failed at the wanted version" is this predicate.)
--
-- `crm_sync_pending` stays while the previous release, which reads through it, may still run;
-- drop it in a later release.
--
-- Built concurrently (outside a transaction, hence the first line), so lead writes go on
-- meanwhile. An interrupted build leaves an invalid index behind: drop it
-- (`drop index concurrently crm_sync_claimable`) and migrate again.
create index concurrently crm_sync_claimable on crm_sync_state (tenant_id, updated_at)
    where synced_version < wanted_version
      and (failed_version is null or failed_version < wanted_version);
