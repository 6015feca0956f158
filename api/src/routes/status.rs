//! `GET /v1/status`: workers and queue counts, read from Redis.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use leadq_jobs::health;
use leadq_jobs::kinds;
use leadq_jobs::queue::{KindCounts, WorkerStatus};
use leadq_platform::apikey::scope;
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::Auth;
use crate::AppState;

/// The status document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// When this answer was made.
    pub generated_at: DateTime<Utc>,
    /// Live workers (a worker silent for a minute is dropped).
    pub workers: Vec<WorkerStatus>,
    /// One entry per job kind.
    pub queues: Vec<KindCounts>,
}

/// `GET /v1/status`.
pub async fn get(State(app): State<AppState>, auth: Auth) -> Result<Json<Status>, ApiError> {
    auth.require(scope::STATUS_READ)?;
    let queues = health::queue_counts(&app.queue)
        .await
        .map_err(ApiError::QueueUnavailable)?;
    let workers = app
        .queue
        .workers(&kinds::names())
        .await
        .map_err(ApiError::QueueUnavailable)?;
    Ok(Json(Status {
        generated_at: Utc::now(),
        workers,
        queues,
    }))
}
