//! Distributed tracing: OpenTelemetry spans from `tracing` spans, exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and the
//! W3C trace context (`traceparent`, `tracestate`) carried across every hop: HTTP requests in,
//! the job envelope (signed with it, so a forged context is refused like any other
//! alteration), and calls out to HubSpot.
//!
//! Spans name themselves with tracing-opentelemetry's special fields: `otel.name` (e.g.
//! `process lead_score`) and `otel.kind` (`server`, `client`, `producer`, `consumer`). The spans
//! that frame work (a request, a job run) also declare `trace_id` and `span_id`, filled by
//! [`record_ids`], so each JSON log line inside them names its trace next to its correlation
//! id.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The OTLP exporter and its tracer, when `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set; the
/// other standard `OTEL_*` variables (headers, timeout, protocol, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`) are read by the SDK itself. `service` is the default
/// `service.name` (`leadq-api`, `leadq-worker`).
pub fn otlp_from_env(service: &str) -> Option<(SdkTracerProvider, SdkTracer)> {
    #[allow(clippy::disallowed_methods)]
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(error) => {
            // Telemetry must never stop the service; say so once and run without traces.
            eprintln!("leadq: OpenTelemetry export is off: {error}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        // Spans leave scrubbed, as log lines and Sentry events do (`scrubbed`).
        .with_batch_exporter(super::scrubbed::Scrubbed(exporter))
        .with_resource(resource.build())
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "leadq");
    Some((provider, tracer))
}

/// The trace context of `span` as W3C headers (`traceparent`, and `tracestate` when not
/// empty); empty when tracing is off.
pub fn headers_of(span: &tracing::Span) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut out);
    }
    out
}

/// The W3C headers the propagator reads, by lower-case name.
pub const HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The remote context named by W3C headers (lower-case names, as [`headers_of`] writes them);
/// `None` when they name none or a malformed one.
pub fn context_from(headers: &HashMap<String, String>) -> Option<opentelemetry::Context> {
    let cx = TraceContextPropagator::new().extract(headers);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `remote` the parent of `span` (a request whose caller traced it, a job whose producer
/// did), and also links `span` to it (messaging: each run of a job links to its creation).
pub fn continue_from(span: &tracing::Span, remote: opentelemetry::Context, link: bool) {
    let sc: SpanContext = remote.span().span_context().clone();
    let _ = span.set_parent(remote);
    if link {
        span.add_link(sc);
    }
}

/// Fills the `trace_id` and `span_id` fields `span` declared (empty), once its parent is
/// known, so log lines inside it name the trace.
pub fn record_ids(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}
