//! Cross-tenant abuse detection: one principal acting on, or refused for, many tenants.
//!
//! Tenant isolation stops a stolen operator token or a leaked key from *succeeding* across
//! tenants; it does not tell anyone that something is trying. So every place that knows both a
//! principal and a tenant reports the pair here, and a sliding window in Redis
//! ([`leadq_queue::Queue::sighting`], shared by every process) counts the distinct tenants each
//! principal touched. When they reach `LEADQ_CROSS_TENANT_THRESHOLD` within
//! `LEADQ_CROSS_TENANT_WINDOW_SECS`, one `security.cross_tenant_activity` event is raised — once
//! per principal per window, however many jobs or requests cross it:
//! audited on the platform chain (actor = the principal), counted in
//! `leadq_security_events_total{kind="cross_tenant_activity"}` (the alert
//! `LeadqCrossTenantActivity`), and logged as an alert.
//!
//! Who reports:
//! - the worker's authorization ([`crate::authz`]): every operator job (operators legitimately
//!   span tenants, so the threshold is what tells routine from a sweep), and every *refused*
//!   job of an API key (a key can only ever act for its own tenant, so accepted jobs are not
//!   worth a Redis round trip on the hot path);
//! - the API: operator requests naming a tenant (the dead-letter routes' tenant filter), and
//!   failed authentications by source address
//!   against the tenant they named (`address:<ip>`; an address is kept in the audit row because
//!   on-call needs it to block the source — it is the attacker's, not a data subject's).
//!
//! Detection never fails the caller: if Redis cannot be reached the sighting is dropped with a
//! warning (the queue itself would be down then, and louder alerts fire).

use std::time::Duration;

use leadq_platform::audit::Auditor;
use leadq_platform::config::EdgeSettings;
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use leadq_queue::Queue;
use sqlx::PgPool;

/// The watch name of cross-tenant activity in Redis.
const WATCH: &str = "xtenant";

/// Reports principals acting across tenants. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CrossTenantWatch {
    queue: Queue,
    pool: PgPool,
    threshold: u32,
    window: Duration,
}

impl CrossTenantWatch {
    /// A watch with the thresholds of `edge`.
    pub fn new(queue: Queue, pool: PgPool, edge: &EdgeSettings) -> Self {
        Self {
            queue,
            pool,
            threshold: edge.cross_tenant_threshold,
            window: edge.cross_tenant_window,
        }
    }

    /// Records that `principal` (`operator:<name>`, `api_key:<id>`, `address:<ip>`) acted on
    /// or was refused for `tenant` (an id or slug: any stable name of the tenant). Raises the
    /// event when this sighting crosses the threshold; returns whether it did.
    pub async fn saw(&self, principal: &str, tenant: &str, correlation_id: &str) -> bool {
        let sighting = match self
            .queue
            .sighting(WATCH, principal, tenant, self.window, self.threshold)
            .await
        {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(error = %error, "Could not record a cross-tenant sighting.");
                return false;
            }
        };
        if !sighting.raised {
            return false;
        }
        metrics::counter!(m::SECURITY_EVENTS_TOTAL, m::label::KIND => "cross_tenant_activity")
            .increment(1);
        tracing::error!(
            principal,
            distinct_tenants = sighting.distinct,
            window_secs = self.window.as_secs(),
            alerted = true,
            "One principal acted on or was refused for many tenants in a short window."
        );
        if let Err(error) = self
            .audit(principal, sighting.distinct, correlation_id)
            .await
        {
            tracing::warn!(error = %error, "Could not audit a cross-tenant activity event.");
        }
        true
    }

    async fn audit(
        &self,
        principal: &str,
        distinct: u64,
        correlation_id: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = db::begin(&self.pool, Scope::Platform).await?;
        Auditor {
            tenant_id: None,
            actor: principal,
            correlation_id,
        }
        .entry("security.cross_tenant_activity", principal)
        .outcome("raised")
        .details(serde_json::json!({
            "distinct_tenants": distinct,
            "window_secs": self.window.as_secs(),
            "threshold": self.threshold,
        }))
        .record(&mut *tx)
        .await?;
        tx.commit().await
    }
}
