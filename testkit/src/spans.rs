//! The test process's subscriber: log lines on stderr only with `TEST_LOG`, and OpenTelemetry
//! spans captured in memory while at least one test [`watch`]es (tests run in parallel in one
//! process; each looks at the spans of its own trace only). Outside a watch the OpenTelemetry
//! layer sees nothing, so the rest of the suite pays nothing for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
static WATCHERS: AtomicUsize = AtomicUsize::new(0);

/// Installs the subscriber once per process.
pub(crate) fn install() {
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "leadq-test");
        // The provider must outlive every test: the process ends first.
        std::mem::forget(provider);
        #[allow(clippy::disallowed_methods)]
        let logs = std::env::var("TEST_LOG").is_ok().then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_span_list(true)
                .flatten_event(true)
                .with_writer(leadq_platform::scrub::scrubbing_stderr())
        });
        let _ = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(filter_fn(|_| WATCHERS.load(Ordering::Relaxed) > 0)),
            )
            .with(logs)
            .try_init();
        exporter
    });
}

/// Spans are captured while this lives.
#[derive(Debug)]
pub struct Watch(());

impl Drop for Watch {
    fn drop(&mut self) {
        WATCHERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts capturing spans (until the returned guard is dropped).
pub fn watch() -> Watch {
    install();
    WATCHERS.fetch_add(1, Ordering::Relaxed);
    Watch(())
}

/// A fresh W3C `traceparent` for a test's request: its trace id picks the test's spans out.
pub fn new_traceparent() -> (TraceId, String) {
    let trace = TraceId::from_bytes(*uuid::Uuid::new_v4().as_bytes());
    let parent = SpanId::from_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap());
    (trace, format!("00-{trace}-{parent}-01"))
}

/// The finished spans of `trace`, so far.
pub fn of_trace(trace: TraceId) -> Vec<SpanData> {
    EXPORTER
        .get()
        .map(|e| e.get_finished_spans().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

/// Every finished span whose links include `span` (the process spans of one job).
pub fn linked_to(span: SpanId) -> Vec<SpanData> {
    EXPORTER
        .get()
        .map(|e| e.get_finished_spans().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.links.iter().any(|l| l.span_context.span_id() == span))
        .collect()
}
