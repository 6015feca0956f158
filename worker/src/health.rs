//! The worker's own small HTTP server: `/healthz`, `/readyz`, `/metrics` on
//! `LEADQ_WORKER_ADDR`, so Prometheus scrapes workers as well as the API.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use leadq_jobs::health;
use leadq_queue::Queue;
use sqlx::PgPool;

#[derive(Clone)]
struct HealthState {
    pool: PgPool,
    queue: Queue,
}

/// The router.
pub fn router(pool: PgPool, queue: Queue) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HealthState { pool, queue })
}

async fn readyz(State(s): State<HealthState>) -> impl IntoResponse {
    let r = health::readiness(&s.pool, &s.queue).await;
    let code = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}

async fn metrics(State(s): State<HealthState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        health::metrics_text(&s.queue).await,
    )
}
