//! The worker's own small HTTP server: `/healthz`, `/readyz`, `/metrics` on
//! `LEADQ_WORKER_ADDR`, so Prometheus scrapes workers as well as the API. The routes are the
//! API's own ([`leadq_jobs::health::router`]).

use axum::Router;
use leadq_queue::Queue;
use sqlx::PgPool;

/// The router.
pub fn router(pool: PgPool, queue: Queue) -> Router {
    leadq_jobs::health::router(pool, queue)
}
