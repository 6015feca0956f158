//! `GET /v1/status`: workers and queue counts, read from Redis.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use leadq_jobs::health;
use leadq_jobs::kinds;
use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use leadq_queue::{KindCounts, WorkerStatus};
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::OperatorContext;
use crate::AppState;

/// The status document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = StatusReport)]
pub struct Status {
    /// When this answer was made.
    pub generated_at: DateTime<Utc>,
    /// Live workers (a worker silent for a minute is dropped).
    pub workers: Vec<WorkerStatus>,
    /// One entry per job kind.
    pub queues: Vec<KindCounts>,
    /// Completions per minute over the last [`THROUGHPUT_MINUTES`] minutes, per kind.
    pub throughput: Vec<KindThroughput>,
}

/// Minutes of completions `/v1/status` reports.
pub const THROUGHPUT_MINUTES: u32 = 10;

/// One kind's completions per minute.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KindThroughput {
    /// The kind.
    pub kind: String,
    /// Completions per minute, oldest first; the last is the minute now ending.
    pub per_minute: Vec<u64>,
    /// False when completion records were trimmed inside the window (`LEADQ_KEEP_DONE`):
    /// the counts are then a lower bound.
    pub covered: bool,
}

/// `GET /v1/status`: a cross-tenant view, for platform operators only; each view is audited.
#[utoipa::path(get, path = "/v1/status", operation_id = "get_status", tag = "operations",
    security(("operator_token" = [])),
    responses((status = 200, description = "Workers and queue counts (permission `console`).",
               body = Status)))]
pub async fn get(
    State(app): State<AppState>,
    operator: OperatorContext,
) -> Result<Json<Status>, ApiError> {
    report(&app, &operator).await.map(Json)
}

/// The status document, as `GET /v1/status` answers it (the console's overview renders the
/// same); the view is audited as `status.view`.
pub async fn report(app: &AppState, operator: &OperatorContext) -> Result<Status, ApiError> {
    operator.require(leadq_platform::operators::permission::CONSOLE)?;
    let mut tx = db::begin(&app.pool, Scope::Platform).await?;
    Auditor {
        tenant_id: None,
        actor: &operator.actor,
        correlation_id: &operator.correlation_id,
    }
    .entry("status.view", "platform:status")
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    let queues = health::queue_counts(&app.queue)
        .await
        .map_err(ApiError::QueueUnavailable)?;
    let workers = app
        .queue
        .workers(&kinds::names())
        .await
        .map_err(ApiError::QueueUnavailable)?;
    let mut throughput = Vec::new();
    for kind in kinds::names() {
        let t = app
            .queue
            .completions(kind, THROUGHPUT_MINUTES)
            .await
            .map_err(ApiError::QueueUnavailable)?;
        throughput.push(KindThroughput {
            kind: kind.to_owned(),
            per_minute: t.per_minute,
            covered: t.covered,
        });
    }
    Ok(Status {
        generated_at: Utc::now(),
        workers,
        queues,
        throughput,
    })
}
