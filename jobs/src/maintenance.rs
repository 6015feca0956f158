//! The platform's own recurring maintenance, run by the scheduler (`worker/src/scheduler.rs`)
//! once per firing across all workers.
//!
//! - `crm_reconcile`: a lead whose CRM sync was wanted but is neither confirmed, failed for
//!   good, nor claimed by a batch for a while (a `crm_sync` job lost with a Redis that lost its
//!   last second, a long outage) gets a `crm_sync` job for its tenant again, on behalf of
//!   `system:scheduler`. The job's message id names the firing, so a firing asks once.
//! - `job_runs_retention`: finished `job_runs` rows past retention are deleted in slices.

use std::time::Duration;

use chrono::Utc;
use leadq_platform::db::{self, Scope};
use sqlx::PgPool;
use uuid::Uuid;

use crate::crm_sync::SyncInput;
use crate::envelope::{Envelope, SCHEMA_VERSION};
use crate::kinds;
use crate::queue::{NewJob, Queue, QueueError};

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
        let stale: Option<(Uuid, i64)> = sqlx::query_as(
            "select lead_id, wanted_version
               from crm_sync_state
              where synced_version < wanted_version
                and failed_version is distinct from wanted_version
                and updated_at < now() - make_interval(secs => $1)
                and (claim_until is null or claim_until < now())
              order by updated_at
              limit 1",
        )
        .bind(STALE_AFTER.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some((lead_id, version)) = stale else {
            continue;
        };
        jobs.push(NewJob::now(Envelope {
            schema_version: SCHEMA_VERSION,
            message_id: format!("crm_reconcile:{tenant}:{firing_ms}"),
            tenant_id: tenant,
            user_id: SCHEDULER_PRINCIPAL.to_owned(),
            action: kinds::CRM_SYNC.to_owned(),
            payload: serde_json::to_value(SyncInput { lead_id, version }).unwrap_or_default(),
            timestamp: Utc::now(),
            correlation_id: format!("crm_reconcile-{firing_ms}"),
            signature: None,
        }));
    }
    if jobs.is_empty() {
        return Ok(0);
    }
    let done = queue.enqueue(jobs).await?;
    Ok(done.iter().filter(|e| !e.duplicate).count() as u64)
}

/// Deletes finished `job_runs` rows older than `keep`; returns how many.
pub async fn job_runs_retention(pool: &PgPool, keep: Duration) -> Result<u64, MaintenanceError> {
    let mut total = 0;
    for tenant in tenants(pool).await? {
        loop {
            let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
            let n = sqlx::query(
                "delete from job_runs where job_id in (
                     select job_id from job_runs
                      where status in ('completed', 'dead')
                        and coalesce(finished_at, updated_at) < now() - make_interval(secs => $1)
                      limit $2)",
            )
            .bind(keep.as_secs_f64())
            .bind(DELETE_SLICE)
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
