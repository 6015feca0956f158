//! `/healthz` (the process answers), `/readyz` (Redis and PostgreSQL answer), `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use leadq_jobs::health;

use crate::AppState;

/// `GET /healthz`.
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when both dependencies answer, 503 naming the one that does not.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let r = health::readiness(&app.pool, &app.queue).await;
    let code = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        health::metrics_text(&app.queue).await,
    )
}
