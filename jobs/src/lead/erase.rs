//! The right to be forgotten: a lead erased from PostgreSQL and from every queued job that
//! names it, with a tombstone so no older job brings it back, audited without personal data.

use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use serde::Serialize;
use sqlx::PgPool;

/// What an erasure removed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Erased {
    /// The lead existed in PostgreSQL and was deleted.
    pub lead_deleted: bool,
    /// Queued or dead-lettered jobs carrying the lead's data that were removed from Redis.
    pub jobs_removed: u64,
    /// Jobs running right now; their handler sees the tombstone and writes nothing.
    pub jobs_running: u64,
}

impl Erased {
    /// Whether there was anything to erase.
    pub fn found_anything(&self) -> bool {
        self.lead_deleted || self.jobs_removed > 0 || self.jobs_running > 0
    }
}

/// Errors of an erasure.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The database failed (nothing was erased from Redis).
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Redis failed after the database erasure committed; run the erasure again.
    #[error("queue error")]
    Queue(#[from] leadq_queue::QueueError),
}

/// Right to be forgotten: deletes the lead `external_id` of `tenant` from PostgreSQL, leaves a
/// tombstone (so no job made before now can recreate it), removes its pending and
/// dead-lettered jobs from Redis, and audits a pseudonymous record (the lead's uuid, no PII).
/// Idempotent: running it again is safe and finishes an interrupted erasure.
pub async fn erase(
    pool: &PgPool,
    queue: &leadq_queue::Queue,
    tenant: uuid::Uuid,
    external_id: &str,
    actor: &str,
    correlation_id: &str,
) -> Result<Erased, EraseError> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    // Waits for a job writing this lead right now to commit, so its row is deleted below.
    crate::lead::store::hold_lead(&mut tx, tenant, external_id).await?;
    sqlx::query(
        "insert into erasures (tenant_id, external_id) values ($1, $2)
         on conflict (tenant_id, external_id) do update set erased_at = now()",
    )
    .bind(tenant)
    .bind(external_id)
    .execute(&mut *tx)
    .await?;
    let lead_id: Option<uuid::Uuid> = sqlx::query_scalar(
        "delete from leads where tenant_id = $1 and external_id = $2 returning id",
    )
    .bind(tenant)
    .bind(external_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    // Every kind whose payload names the lead by `external_id`.
    let (mut jobs_removed, mut jobs_running) = (0, 0);
    for kind in [crate::kinds::LEAD_SCORE, crate::kinds::CHATWOOT_EVENT] {
        let (removed, running) = queue
            .erase_where(kind, |e| {
                e.tenant_id == tenant
                    && e.payload.get("external_id").and_then(|v| v.as_str()) == Some(external_id)
            })
            .await?;
        jobs_removed += removed;
        jobs_running += running;
    }
    let erased = Erased {
        lead_deleted: lead_id.is_some(),
        jobs_removed,
        jobs_running,
    };
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let subject = lead_id.map_or_else(|| "lead:unknown".to_owned(), |id| format!("lead:{id}"));
    Auditor {
        tenant_id: Some(tenant),
        actor,
        correlation_id,
    }
    .entry("lead.erase", &subject)
    .details(serde_json::to_value(&erased).unwrap_or_default())
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(erased)
}
