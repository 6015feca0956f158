//! Per-tenant limits: an ingest rate limit shared by every API instance (GCRA in Redis) and a
//! daily lead quota. One noisy tenant cannot flood the platform's queues.
//!
//! Limits live in PostgreSQL (`tenant_limits`, defaults when absent) and change only through
//! the `update_billing_limit` job, which travels the queue like any other: signed, authorized
//! (operator principals only), audited. The API reads them for every lead it admits, from a
//! [`LimitsCache`]: a change applies from the next request after its notification
//! (`leadq_platform::changes`), at the latest [`CACHE_TTL`] after it commits.

use std::time::Duration;

use leadq_platform::changes::Change;
use leadq_platform::ttl::TtlCache;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use leadq_platform::db::{self, Scope};
pub use leadq_queue::controls::{Admission, AdmitLimits};
use leadq_queue::{Queue, QueueError};

/// A tenant's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Limits {
    /// Sustained ingest rate.
    pub ingest_per_second: i32,
    /// Requests allowed at once above the rate.
    pub ingest_burst: i32,
    /// Leads accepted per UTC day.
    pub leads_per_day: i32,
}

// One version so far (`leadq_queue::payload`).
leadq_queue::v1_payload!(Limits);

impl Default for Limits {
    fn default() -> Self {
        Self {
            ingest_per_second: 50,
            ingest_burst: 100,
            leads_per_day: 100_000,
        }
    }
}

impl Limits {
    /// Every field positive and sane.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.ingest_per_second <= 0 || self.ingest_burst <= 0 || self.leads_per_day <= 0 {
            return Err("limits must be positive");
        }
        if self.ingest_per_second > 100_000 || self.ingest_burst > 1_000_000 {
            return Err("limits are implausibly large");
        }
        Ok(())
    }
}

/// Reads a tenant's limits (defaults when none are set).
pub async fn get(pool: &PgPool, tenant: Uuid) -> Result<Limits, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    get_in(&mut tx, tenant).await
}

/// [`get`] in a transaction acting for `tenant`.
pub async fn get_in(tx: &mut sqlx::PgConnection, tenant: Uuid) -> Result<Limits, sqlx::Error> {
    let row: Option<Limits> = sqlx::query_as(
        "select ingest_per_second, ingest_burst, leads_per_day from tenant_limits
          where tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(tx)
    .await?;
    Ok(row.unwrap_or_default())
}

/// How long the API uses a tenant's limits without reading them again.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Tenants whose limits are kept at most.
const CACHE_MAX: usize = 10_000;

/// The tenants' limits as the API last read them. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct LimitsCache(TtlCache<Uuid, Limits>);

impl Default for LimitsCache {
    fn default() -> Self {
        Self(TtlCache::new(CACHE_TTL, CACHE_MAX))
    }
}

impl LimitsCache {
    /// [`get`], answered from the cache when read within [`CACHE_TTL`] and not changed since.
    pub async fn get(&self, pool: &PgPool, tenant: Uuid) -> Result<Limits, sqlx::Error> {
        if let Some(l) = self.0.get(&tenant) {
            return Ok(l);
        }
        let reading = self.0.reading();
        let limits = get(pool, tenant).await?;
        self.0.insert(tenant, limits, reading);
        Ok(limits)
    }

    /// Drops what `change` may have made stale.
    pub fn drop_changed(&self, change: Change) {
        self.0.forget(|t| change.concerns(*t));
    }
}

impl Limits {
    /// The ingest part of the limits, as the queue engine's admission applies it.
    pub fn admission(&self) -> AdmitLimits {
        AdmitLimits {
            per_second: self.ingest_per_second,
            burst: self.ingest_burst,
            per_day: self.leads_per_day,
        }
    }
}

/// Admits one lead for `tenant` under `limits`, atomically in Redis.
pub async fn admit(queue: &Queue, tenant: Uuid, limits: &Limits) -> Result<Admission, QueueError> {
    queue.admit(tenant, &limits.admission()).await
}

/// The `update_billing_limit` handler: sets the tenant's limits, audited with old and new
/// values. Idempotent (an upsert).
pub async fn run_update(
    job: leadq_queue::backend::Job<Limits>,
    deps: apalis_core::task::data::Data<crate::Deps>,
) -> Result<(), leadq_queue::JobError> {
    let meta = &job.meta;
    let new = job.payload;
    if let Err(why) = new.validate() {
        return Err(leadq_queue::JobError::permanent(
            "invalid_payload",
            anyhow::anyhow!(why),
        ));
    }
    let old = get(&deps.pool, meta.tenant_id).await?;
    let mut tx = db::begin(&deps.pool, Scope::Tenant(meta.tenant_id)).await?;
    sqlx::query(
        "insert into tenant_limits (tenant_id, ingest_per_second, ingest_burst, leads_per_day)
         values ($1, $2, $3, $4)
         on conflict (tenant_id) do update set ingest_per_second = excluded.ingest_per_second,
             ingest_burst = excluded.ingest_burst, leads_per_day = excluded.leads_per_day,
             updated_at = now()",
    )
    .bind(meta.tenant_id)
    .bind(new.ingest_per_second)
    .bind(new.ingest_burst)
    .bind(new.leads_per_day)
    .execute(&mut *tx)
    .await?;
    meta.auditor()
        .entry(
            "billing.limit_update",
            &format!("tenant:{}", meta.tenant_id),
        )
        .details(serde_json::json!({"old": old, "new": new, "job_id": meta.job_id}))
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!("Tenant limits updated.");
    Ok(())
}
