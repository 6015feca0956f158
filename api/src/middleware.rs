//! Per-request plumbing: correlation id, request span, HTTP metrics.
//!
//! The correlation id comes from `X-Correlation-Id` when the caller sends a sane one, or is
//! made here; it is echoed in the response, put on the request span (so every log line of the
//! request carries it), handed to every job the request enqueues, and included in error bodies.
//! The request span is the trace's server span (`<METHOD> <route template>`), continuing the
//! caller's W3C trace context when it sends one.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use leadq_jobs::tenant_labels::TenantLabels;
use leadq_platform::metrics as m;
use leadq_platform::telemetry::{self, trace};
use tracing::Instrument;

/// The correlation-id header.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// The correlation id of the request being served (empty outside a request).
pub fn current_correlation_id() -> String {
    CORRELATION_ID.try_with(|c| c.clone()).unwrap_or_default()
}

/// Runs `f` as within the request of `correlation_id`: for the layers outside [`observe`]
/// that answer for a request after it ended there (they know its id from the response header).
pub fn with_correlation_id<T>(correlation_id: String, f: impl FnOnce() -> T) -> T {
    CORRELATION_ID.sync_scope(correlation_id, f)
}

/// Correlation id, span and metrics around every request (`labels`: the bounded tenant label of
/// the per-tenant request counter).
pub async fn observe(State(labels): State<TenantLabels>, req: Request, next: Next) -> Response {
    let correlation_id = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| leadq_queue::envelope::valid_id(v) && v.len() <= 64)
        // An id that looks like a secret is not echoed anywhere: make a fresh one.
        .filter(|v| {
            matches!(
                leadq_platform::scrub::global().scrub(v),
                std::borrow::Cow::Borrowed(_)
            )
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method()).to_owned();
    let span = tracing::info_span!("request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        correlation_id = %correlation_id,
        method = %method,
        route = %route,
        tenant_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // A caller that traces (W3C `traceparent`) gets its request continued, not a new trace.
    let carried: std::collections::HashMap<String, String> = trace::HEADERS
        .iter()
        .filter_map(|h| {
            let v = req.headers().get(*h)?.to_str().ok()?;
            Some(((*h).to_owned(), v.to_owned()))
        })
        .collect();
    if let Some(remote) = trace::context_from(&carried) {
        trace::continue_from(&span, remote, false);
    }
    trace::record_ids(&span);
    let started = Instant::now();
    let tags = [
        ("correlation_id", correlation_id.clone()),
        ("route", route.clone()),
        ("method", method.clone()),
    ];
    let (mut res, tenant) = telemetry::noting_tenant(CORRELATION_ID.scope(
        correlation_id.clone(),
        telemetry::with_own_hub(&tags, next.run(req).instrument(span.clone())),
    ))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = res.status();
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = elapsed * 1000.0,
            "Request served."
        );
    });
    metrics::counter!(m::HTTP_REQUESTS_TOTAL,
        m::label::ROUTE => route.clone(),
        m::label::METHOD => method,
        m::label::STATUS => status.as_u16().to_string())
    .increment(1);
    if let Some(tenant) = tenant {
        // The canary tenant has no label: its requests are not business figures.
        if let Some(label) = labels.label(tenant).await {
            let class = format!("{}xx", status.as_u16() / 100);
            metrics::counter!(m::TENANT_HTTP_REQUESTS_TOTAL,
                m::label::TENANT => label,
                m::label::ROUTE => route.clone(),
                m::label::STATUS_CLASS => class)
            .increment(1);
        }
    }
    metrics::histogram!(m::HTTP_REQUEST_DURATION_SECONDS, m::label::ROUTE => route).record(elapsed);
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        res.headers_mut().insert(CORRELATION_HEADER, v);
    }
    res
}

/// The request method as a metric label: the standard methods by name, anything else `other`.
/// HTTP lets a client send any token as a method, and each new one was a new series in every
/// request metric until the process restarted.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
