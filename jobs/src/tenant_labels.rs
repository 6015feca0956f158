//! The `tenant` label of per-tenant metrics, bounded: the first tenants by creation get their
//! slug, the rest share `other`, and the canary tenant gets none (its synthetic jobs are not
//! business figures). Shared by the worker (jobs per tenant) and the API (rate limits).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::RwLock;
use uuid::Uuid;

/// The `tenant` label of per-tenant metrics: the slug of one of the first `cap` tenants (by
/// creation), `other` for the rest, so the label's cardinality is bounded whatever the number
/// of tenants.
#[derive(Debug, Clone)]
pub struct TenantLabels {
    pool: PgPool,
    cap: usize,
    excluded: Option<String>,
    known: Arc<RwLock<Known>>,
}

/// Slugs by tenant id, and when they were last loaded.
type Known = (HashMap<Uuid, String>, Option<Instant>);

/// The label value for tenants beyond the cap.
pub const OTHER_TENANTS: &str = "other";

impl TenantLabels {
    /// Labels for at most `cap` tenants; `excluded` (the canary tenant's slug) gets none.
    pub fn new(pool: PgPool, cap: usize, excluded: Option<String>) -> Self {
        Self {
            pool,
            cap,
            excluded,
            known: Arc::default(),
        }
    }

    /// The label of `tenant`; `None` for the excluded tenant, whose figures are not counted.
    pub async fn label(&self, tenant: Uuid) -> Option<String> {
        let label = self.slug_or_other(tenant).await;
        (self.excluded.as_ref() != Some(&label)).then_some(label)
    }

    async fn slug_or_other(&self, tenant: Uuid) -> String {
        {
            let known = self.known.read().await;
            if let Some(slug) = known.0.get(&tenant) {
                return slug.clone();
            }
            // A full map, or one loaded moments ago, will not learn this tenant now.
            if known.0.len() >= self.cap
                || known
                    .1
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
            {
                return OTHER_TENANTS.to_owned();
            }
        }
        let mut known = self.known.write().await;
        let rows: Result<Vec<(Uuid, String)>, _> =
            sqlx::query_as("select id, slug from tenants order by created_at, id limit $1")
                .bind(i64::try_from(self.cap).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await;
        known.1 = Some(Instant::now());
        if let Ok(rows) = rows {
            known.0 = rows.into_iter().collect();
        }
        known
            .0
            .get(&tenant)
            .cloned()
            .unwrap_or_else(|| OTHER_TENANTS.to_owned())
    }
}
