//! Liveness, readiness and metrics: `api` and `worker` serve the same three routes
//! ([`router`]) on their own HTTP servers, so Prometheus and orchestrators see one contract.
//!
//! `/metrics` names tenants (bounded slugs), queue depths and error rates: nothing for the
//! open internet. With `LEADQ_METRICS_TOKEN` set it answers only `Authorization: Bearer
//! <token>` (401 otherwise, in the standard error body); with `LEADQ_METRICS_ADDR` the API
//! serves it on that address alone ([`metrics_router`]), a port a firewall can keep private.

use std::time::Duration;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use leadq_platform::metrics as m;
use leadq_platform::secret::Secret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::kinds;
use leadq_queue::{KindCounts, Queue};

/// The result of a readiness check.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// Per dependency: `ok` or a stable reason (`unreachable`, `timeout`).
    pub checks: Checks,
}

/// Per-dependency readiness.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// Redis.
    pub redis: &'static str,
    /// PostgreSQL.
    pub postgres: &'static str,
}

impl Readiness {
    /// Whether every dependency answered.
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/metrics` waits for each dependency: well inside any scrape timeout, so an outage
/// reads as `leadq_dependency_up 0`, not as a target that failed to answer.
const METRICS_CHECK_TIMEOUT: Duration = Duration::from_millis(750);

/// Asks Redis and PostgreSQL, each with a 2 s timeout, at the same time.
pub async fn readiness(pool: &PgPool, queue: &Queue) -> Readiness {
    readiness_within(pool, queue, CHECK_TIMEOUT).await
}

async fn readiness_within(pool: &PgPool, queue: &Queue, limit: Duration) -> Readiness {
    let redis = async {
        match tokio::time::timeout(limit, queue.ping()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(_)) => "unreachable",
            Err(_) => "timeout",
        }
    };
    let postgres = async {
        match tokio::time::timeout(limit, sqlx::query("select 1").execute(pool)).await {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "unreachable",
            Err(_) => "timeout",
        }
    };
    let (redis, postgres) = tokio::join!(redis, postgres);
    let ready = redis == "ok" && postgres == "ok";
    Readiness {
        status: if ready { "ready" } else { "unavailable" },
        checks: Checks { redis, postgres },
    }
}

/// Reads the counts of every kind and publishes them as the queue-depth gauges.
pub async fn queue_counts(queue: &Queue) -> Result<Vec<KindCounts>, leadq_queue::QueueError> {
    let mut out = Vec::new();
    for kind in kinds::names() {
        let c = queue.counts(kind).await?;
        for (state, v) in [
            (m::state::PENDING, c.pending),
            (m::state::HELD, c.held),
            (m::state::SCHEDULED, c.scheduled),
            (m::state::RUNNING, c.running),
            (m::state::DEAD, c.dead),
        ] {
            metrics::gauge!(m::QUEUE_DEPTH, m::label::KIND => kind, m::label::STATE => state)
                .set(v as f64);
        }
        out.push(c);
    }
    Ok(out)
}

/// The Prometheus text of this process: whether PostgreSQL and Redis answer now
/// ([`m::DEPENDENCY_UP`]), and fresh queue gauges when Redis answers. Each read is bounded by
/// [`METRICS_CHECK_TIMEOUT`], so a dead dependency shows as a 0, never as a scrape timeout.
pub async fn metrics_text(pool: &PgPool, queue: &Queue) -> String {
    let r = readiness_within(pool, queue, METRICS_CHECK_TIMEOUT).await;
    for (dependency, status) in [("postgres", r.checks.postgres), ("redis", r.checks.redis)] {
        metrics::gauge!(m::DEPENDENCY_UP, m::label::DEPENDENCY => dependency)
            .set(if status == "ok" { 1.0 } else { 0.0 });
    }
    if r.checks.postgres == "ok" {
        leadq_platform::checks::publish_canary(pool).await;
    }
    if r.checks.redis == "ok" {
        match tokio::time::timeout(METRICS_CHECK_TIMEOUT, queue_counts(queue)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "Could not refresh queue gauges for /metrics.")
            }
            Err(_) => tracing::warn!("Queue gauges for /metrics timed out."),
        }
    }
    m::collect_process();
    m::install().render()
}

/// What the health routes need.
#[derive(Debug, Clone)]
struct Probe {
    pool: PgPool,
    queue: Queue,
}

/// `GET /healthz` (the process answers), `GET /readyz` (200 when Redis and PostgreSQL answer,
/// else 503 naming the one that does not) and `GET /metrics` (Prometheus text, behind `token`
/// when set), for a router of any state to merge.
pub fn router<S: Clone + Send + Sync + 'static>(
    pool: PgPool,
    queue: Queue,
    token: Option<Secret>,
) -> Router<S> {
    probes_router(pool.clone(), queue.clone()).merge(metrics_router(pool, queue, token))
}

/// `GET /healthz` and `GET /readyz` alone.
pub fn probes_router<S: Clone + Send + Sync + 'static>(pool: PgPool, queue: Queue) -> Router<S> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Probe { pool, queue })
}

/// `GET /metrics` alone, behind `token` when set.
pub fn metrics_router<S: Clone + Send + Sync + 'static>(
    pool: PgPool,
    queue: Queue,
    token: Option<Secret>,
) -> Router<S> {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(MetricsProbe {
            probe: Probe { pool, queue },
            token: token.map(Arc::new),
        })
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(p): State<Probe>) -> impl IntoResponse {
    let r = readiness(&p.pool, &p.queue).await;
    let code = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}

/// What `/metrics` needs: the probe, and the token that guards it.
#[derive(Debug, Clone)]
struct MetricsProbe {
    probe: Probe,
    token: Option<Arc<Secret>>,
}

/// Whether `headers` carry `Authorization: Bearer <token>` (compared in constant time).
fn bearer_matches(headers: &HeaderMap, token: &Secret) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    let digest = |s: &str| Sha256::digest(s.as_bytes());
    bool::from(digest(presented).ct_eq(&digest(token.expose())))
}

async fn metrics(State(p): State<MetricsProbe>, headers: HeaderMap) -> Response {
    if let Some(token) = &p.token {
        if !bearer_matches(&headers, token) {
            metrics::counter!(m::AUTH_FAILURES_TOTAL, m::label::REASON => "metrics_token")
                .increment(1);
            let body = serde_json::json!({"error": {
                "code": "invalid_metrics_token",
                "message": "GET /metrics needs Authorization: Bearer <LEADQ_METRICS_TOKEN>.",
                "correlation_id": "",
            }});
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(body),
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_text(&p.probe.pool, &p.probe.queue).await,
    )
        .into_response()
}
