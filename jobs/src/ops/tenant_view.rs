//! What one tenant sees of its own jobs: per kind its backlog, controls and dead letters
//! (scrubbed, read-only), and its most recent runs. The console's tenant page shows it to the
//! tenant (an API key with `status:read`) and to operators; `GET /v1/tenant/overview` is the
//! same for a tenant's tools.
//!
//! Every read is audited: in the tenant's own trail when the tenant reads
//! (`tenant.overview.view` by `api_key:<id>`), in the platform's when an operator does.

use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use leadq_queue::dlq::Filter;
use leadq_queue::{DeadLetter, Queue};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ops::deadletters::{record, shown, Actor, OpsError};
use crate::ops::lookup::{recent_runs, JobRun};

/// Dead letters shown per kind, newest first.
pub const DEAD_LETTERS_PER_KIND: usize = 20;
/// The newest dead letters of a kind (of every tenant: one set per kind) looked through for the
/// tenant's, on every view. Without a bound, a tenant with few read all of everyone's, one
/// view at a time, on the Redis every tenant shares; its older ones are for the dead-letter
/// listing (`GET /v1/dlq/{kind}?tenant=`, an operator's).
pub const DEAD_LETTERS_LOOKED_AT: usize = 1000;
/// Recent runs shown.
pub const RECENT_RUNS: i64 = 25;

/// The tenant's standing in one kind's queue.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct KindView {
    /// Kind.
    pub kind: String,
    /// Jobs ready to run or held back.
    pub backlog: u64,
    /// Of those, held back (paused, or over its cap).
    pub held: u64,
    /// Running now (counted only while a cap is set).
    pub running: u64,
    /// Paused by an operator.
    pub paused: bool,
    /// Concurrency cap, if any.
    pub cap: Option<u32>,
}

/// One recent run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct RecentRun {
    /// Job id.
    pub job_id: Uuid,
    /// Kind.
    pub kind: String,
    /// The run.
    #[serde(flatten)]
    pub run: JobRun,
}

/// The tenant page.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct TenantOverview {
    /// Tenant slug.
    pub tenant: String,
    /// One entry per kind.
    pub queues: Vec<KindView>,
    /// Its newest dead letters of each kind (up to 20), payloads scrubbed, found among the
    /// kind's newest 1,000 of all tenants: older ones are not looked for here.
    pub dead_letters: Vec<DeadLetter>,
    /// Its most recent runs, newest first.
    pub runs: Vec<RecentRun>,
}

/// Who reads a tenant's page.
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    /// The tenant itself (`api_key:<id>`).
    Tenant(Actor<'a>),
    /// A platform operator.
    Operator(Actor<'a>),
}

/// The page of tenant `tenant` (`slug`), audited as `tenant.overview.view`.
pub async fn overview(
    pool: &PgPool,
    queue: &Queue,
    reader: Reader<'_>,
    tenant: Uuid,
    slug: &str,
) -> Result<TenantOverview, OpsError> {
    let subject = format!("tenant:{tenant}");
    match reader {
        Reader::Operator(who) => {
            record(
                pool,
                who.actor,
                "tenant.overview.view",
                &subject,
                who.correlation_id,
                serde_json::json!({"tenant_id": tenant}),
            )
            .await?;
        }
        Reader::Tenant(who) => {
            let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
            Auditor {
                tenant_id: Some(tenant),
                actor: who.actor,
                correlation_id: who.correlation_id,
            }
            .entry("tenant.overview.view", &subject)
            .record(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }
    let mut queues = Vec::new();
    let mut dead_letters = Vec::new();
    let filter = Filter {
        tenant: Some(tenant),
        ..Filter::default()
    };
    for kind in crate::kinds::names() {
        let s = queue.tenant_state(kind, tenant).await?;
        queues.push(KindView {
            kind: kind.to_owned(),
            backlog: s.backlog,
            held: s.held,
            running: s.running,
            paused: s.paused,
            cap: s.cap,
        });
        let newest = queue
            .newest_dead_letters(kind, &filter, DEAD_LETTERS_PER_KIND, DEAD_LETTERS_LOOKED_AT)
            .await?;
        dead_letters.extend(newest.into_iter().map(shown));
    }
    let runs = recent_runs(pool, tenant, RECENT_RUNS)
        .await?
        .into_iter()
        .map(|(job_id, kind, run)| RecentRun { job_id, kind, run })
        .collect();
    Ok(TenantOverview {
        tenant: slug.to_owned(),
        queues,
        dead_letters,
        runs,
    })
}
