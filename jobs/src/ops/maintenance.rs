//! The platform's own recurring maintenance, run by the scheduler (`worker/src/scheduler.rs`)
//! once per firing across all workers.
//!
//! - `crm_reconcile`: a lead whose CRM sync was wanted but is neither confirmed, failed for
//!   good, nor claimed by a batch for a while (a `crm_sync` job lost with a Redis that lost its
//!   last second, a long outage) gets a `crm_sync` job for its tenant again, on behalf of
//!   `system:scheduler`. The job's message id names the firing, so a firing asks once.
//! - `job_runs_reconcile`: a `job_runs` row left `running` or `retrying` for a while is
//!   checked against the queue. Its end is written after the job's acknowledgement, so a
//!   worker killed in between, or PostgreSQL down at that moment, leaves it behind; Redis says
//!   what really happened.
//! - `job_runs_retention`: finished `job_runs` rows past retention are deleted in slices.
//! - `audit_verify`: every audit hash chain is recomputed; the result is kept in
//!   `platform_checks`, where the security health checks read how recent and how good it is.

use std::collections::BTreeMap;
use std::time::Duration;

use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use sqlx::PgPool;
use uuid::Uuid;

use crate::kinds;
use crate::lead::sync::SyncInput;
use leadq_queue::envelope::Envelope;
use leadq_queue::whereabouts::Whereabouts;
use leadq_queue::{NewJob, Queue, QueueError};

/// Errors of a maintenance task.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Redis failed.
    #[error("queue error")]
    Queue(#[from] QueueError),
}

/// The principal maintenance jobs are enqueued on behalf of.
pub const SCHEDULER_PRINCIPAL: &str = "system:scheduler";

/// A wanted sync untouched for this long is taken as lost.
const STALE_AFTER: Duration = Duration::from_secs(10 * 60);
/// Rows deleted per statement.
const DELETE_SLICE: i64 = 5000;
/// A `job_runs` row unchanged this long while `running` or `retrying` is checked against the
/// queue (a run longer than this whose job is still queued is left alone).
const RUN_STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// Stale rows read per statement.
const RECONCILE_SLICE: i64 = 500;

/// Every tenant id. Tenant data is readable only inside its tenant's scope (row-level
/// security), so maintenance walks the tenants one by one.
async fn tenants(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("select id from tenants order by id")
        .fetch_all(pool)
        .await
}

/// Enqueues one `crm_sync` per tenant with stale wanted syncs; returns how many were enqueued.
pub async fn crm_reconcile(
    pool: &PgPool,
    queue: &Queue,
    firing_ms: i64,
) -> Result<u64, MaintenanceError> {
    let mut jobs = Vec::new();
    for tenant in tenants(pool).await? {
        let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
        // The tenant named as well as scoped: only that (leakproof) condition reaches the
        // index ahead of row-level security's policy (`leadq_platform::audit::own_rows`).
        // Only while the tenant's `crm_sync` jobs would run: a suspended tenant's, or one whose
        // kind is disabled, were refused by the worker (an `unauthorized` dead letter every
        // firing, `LeadqJobUnauthorized` for as long as it stayed so) and the row stayed stale.
        let stale: Option<(Uuid, i64)> = sqlx::query_as(
            "select lead_id, wanted_version
               from crm_sync_state
              where tenant_id = $2 and synced_version < wanted_version
                and (failed_version is null or failed_version < wanted_version)
                and updated_at < now() - make_interval(secs => $1)
                and (claim_until is null or claim_until < now())
                and exists (select 1 from tenants t where t.id = $2 and t.status = 'active')
                and coalesce((select mode from tenant_job_kinds k
                               where k.tenant_id = $2 and k.kind = $3), 'enabled')
                    in ('enabled', 'shadow')
              order by updated_at
              limit 1",
        )
        .bind(STALE_AFTER.as_secs_f64())
        .bind(tenant)
        .bind(kinds::CRM_SYNC)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some((lead_id, version)) = stale else {
            continue;
        };
        let payload = serde_json::to_value(SyncInput { lead_id, version }).unwrap_or_default();
        jobs.push(NewJob::now(
            Envelope::new(tenant, SCHEDULER_PRINCIPAL, kinds::CRM_SYNC, payload)
                .message_id(format!("crm_reconcile:{tenant}:{firing_ms}"))
                .correlation_id(format!("crm_reconcile-{firing_ms}")),
        ));
    }
    if jobs.is_empty() {
        return Ok(0);
    }
    let done = queue.enqueue(jobs).await?;
    Ok(done.iter().filter(|e| !e.duplicate).count() as u64)
}

/// Sets stale `running` / `retrying` rows to what the queue knows: `completed` or `dead` (with
/// the time Redis recorded), or `unknown` when Redis no longer has the job (its completion
/// trimmed, its dead letter purged, or lost). Rows of jobs still queued are left alone. A
/// dead letter found this way is audited, as its worker would have done. Returns how many
/// rows changed.
pub async fn job_runs_reconcile(pool: &PgPool, queue: &Queue) -> Result<u64, MaintenanceError> {
    let mut changed = 0;
    for tenant in tenants(pool).await? {
        let mut after = Uuid::nil();
        loop {
            let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
            let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
                "select job_id, kind, correlation_id
                   from job_runs
                  where tenant_id = $4
                    and status in ('running', 'retrying')
                    and updated_at < now() - make_interval(secs => $1)
                    and job_id > $2
                  order by job_id
                  limit $3",
            )
            .bind(RUN_STALE_AFTER.as_secs_f64())
            .bind(after)
            .bind(RECONCILE_SLICE)
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            let mut by_kind: BTreeMap<&str, Vec<(Uuid, &str)>> = BTreeMap::new();
            for (id, kind, correlation) in &rows {
                by_kind.entry(kind).or_default().push((*id, correlation));
            }
            for (kind, runs) in by_kind {
                let ids: Vec<Uuid> = runs.iter().map(|r| r.0).collect();
                let places = queue.whereabouts(kind, tenant, &ids).await?;
                let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
                for ((id, correlation), place) in runs.into_iter().zip(places) {
                    let (status, at, dead) = match &place {
                        Whereabouts::Queued => continue,
                        Whereabouts::Completed(at) => ("completed", Some(*at), None),
                        Whereabouts::Dead(d) => ("dead", Some(d.dead_at), Some(d)),
                        Whereabouts::Unknown => ("unknown", None, None),
                    };
                    // Only if no worker wrote the row meanwhile.
                    let n = sqlx::query(
                        "update job_runs set status = $2, finished_at = $3,
                                attempts = coalesce($5, attempts),
                                last_error_code = coalesce($6, last_error_code),
                                updated_at = now()
                          where job_id = $1
                            and status in ('running', 'retrying')
                            and updated_at < now() - make_interval(secs => $4)",
                    )
                    .bind(id)
                    .bind(status)
                    .bind(at)
                    .bind(RUN_STALE_AFTER.as_secs_f64())
                    // What the dead-letter set recorded, where it recorded anything.
                    .bind(dead.and_then(|d| i32::try_from(d.attempts).ok().filter(|a| *a > 0)))
                    .bind(
                        dead.map(|d| d.last_error_code.as_str())
                            .filter(|c| !c.is_empty()),
                    )
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if let (1, Some(d)) = (n, dead) {
                        Auditor {
                            tenant_id: Some(tenant),
                            actor: SCHEDULER_PRINCIPAL,
                            correlation_id: correlation,
                        }
                        .entry("job.dead_letter", &format!("job:{id}"))
                        .outcome(&d.reason)
                        .details(serde_json::json!({
                            "kind": kind, "attempts": d.attempts,
                            "error_code": d.last_error_code, "at": d.dead_at,
                            "reconciled": true,
                        }))
                        .record(&mut *tx)
                        .await?;
                    }
                    changed += n;
                }
                tx.commit().await?;
            }
            if rows.len() < RECONCILE_SLICE as usize {
                break;
            }
        }
    }
    Ok(changed)
}

/// Deletes finished `job_runs` rows older than `keep`; returns how many.
pub async fn job_runs_retention(pool: &PgPool, keep: Duration) -> Result<u64, MaintenanceError> {
    let mut total = 0;
    for tenant in tenants(pool).await? {
        loop {
            let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
            // The tenant named as well as scoped (as above): under row-level security alone
            // each tenant's pass read every tenant's rows.
            let n = sqlx::query(
                "delete from job_runs where job_id in (
                     select job_id from job_runs
                      where tenant_id = $3 and status in ('completed', 'dead', 'unknown')
                        and coalesce(finished_at, updated_at) < now() - make_interval(secs => $1)
                      limit $2)",
            )
            .bind(keep.as_secs_f64())
            .bind(DELETE_SLICE)
            .bind(tenant)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            total += n;
            if n < DELETE_SLICE as u64 {
                break;
            }
        }
    }
    Ok(total)
}

/// Verifies every audit chain and records the result (`platform_checks`, row `audit_verify`);
/// returns the rows checked. A broken chain is recorded as a failed check, not an error: the
/// task itself did its job, and `LeadqSecurityCheckFailing` carries the news.
pub async fn audit_verify(
    pool: &PgPool,
    keys: &leadq_platform::keyring::Keyring,
) -> Result<u64, MaintenanceError> {
    let started = std::time::Instant::now();
    let reports = leadq_platform::audit::verify_all(pool, keys).await?;
    let rows: u64 = reports.iter().map(|r| r.rows).sum();
    let (intact, detail) = leadq_platform::audit::summary(&reports);
    leadq_platform::checks::record(
        pool,
        leadq_platform::checks::AUDIT_VERIFY,
        intact,
        &detail,
        started.elapsed(),
    )
    .await?;
    if !intact {
        tracing::error!(detail = %detail, "Audit chain verification found a broken chain.");
    }
    Ok(rows)
}
