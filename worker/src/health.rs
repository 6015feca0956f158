//! The worker's own small HTTP server: `/healthz`, `/readyz`, `/metrics` on
//! `LEADQ_WORKER_ADDR`, so Prometheus scrapes workers as well as the API. The routes are the
//! API's own ([`leadq_jobs::health::router`]), `/metrics` behind `LEADQ_METRICS_TOKEN` when set.

use axum::Router;
use leadq_platform::secret::Secret;
use leadq_queue::Queue;
use sqlx::PgPool;

/// The router.
pub fn router(pool: PgPool, queue: Queue, metrics_token: Option<Secret>) -> Router {
    leadq_jobs::health::router(pool, queue, metrics_token)
}
