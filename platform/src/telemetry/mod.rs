//! Logs, Sentry and the metrics recorder, set up once per process.
//!
//! Logs are JSON lines on **stderr** (stdout belongs to commands that print results, such as
//! `leadq tenant create` and `leadq bench`). Spans carry `correlation_id` and `tenant_id`, and
//! the JSON formatter writes the fields of every enclosing span on each line, so every line of
//! a request or a job names both. Every line, and every Sentry event, passes through the
//! scrubber ([`crate::scrub`]) first.
//!
//! A panic is one of those lines too ([`log_panics`], called first thing in `main`), not
//! Rust's unscrubbed default message.
//!
//! Traces ([`trace`]): with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP as
//! well, and the W3C trace context follows a lead from the request through Redis to the CRM.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, Settings};

mod panic;
mod scrubbed;
pub mod trace;

pub use panic::{log_panics, panic_line};

/// Keeps Sentry and the trace exporter flushing until dropped; hold it for the life of `main`.
pub struct TelemetryGuard {
    _sentry: Option<sentry::ClientInitGuard>,
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.traces.take() {
            // Sends the spans still buffered; bounded by the exporter's own timeout.
            let _ = p.shutdown();
        }
    }
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("sentry", &self._sentry.is_some())
            .field("traces", &self.traces.is_some())
            .finish()
    }
}

/// A layer added to the log subscriber by a crate above this one (the error-alert layer of
/// `leadq-notify`). It sits next to the registry, so it sees every event the filter lets
/// through, like the log and Sentry layers.
pub type ExtraLayer =
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static>;

/// Installs the log subscriber (with `extra`, when given), Sentry (when `SENTRY_DSN` is set),
/// the trace exporter (when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; `service` is the default
/// `service.name`) and the metrics recorder.
pub fn init(settings: &Settings, service: &str, extra: Option<ExtraLayer>) -> TelemetryGuard {
    install_scrubber(settings);
    let (traces, tracer) = trace::otlp_from_env(service).unzip();
    install(
        &settings.log_filter,
        Some(settings.log_format),
        tracer,
        extra,
    );
    crate::metrics::install();
    metrics::gauge!(crate::metrics::CANARY_CONFIGURED).set(if settings.canary.is_some() {
        1.0
    } else {
        0.0
    });
    let sentry = settings.sentry_dsn.as_ref().map(|dsn| {
        sentry::init(
            sentry::ClientOptions::new()
                .dsn(dsn.expose())
                .maybe_release(sentry::release_name!())
                .environment(settings.environment.clone())
                .send_default_pii(false)
                .before_send(crate::scrub::scrub_sentry_event)
                .before_breadcrumb(crate::scrub::scrub_sentry_breadcrumb),
        )
    });
    TelemetryGuard {
        _sentry: sentry,
        traces,
    }
}

/// Runs `fut` with a Sentry hub of its own (a request, a job), forked from the current one and
/// tagged with `tags`: its events name their request or job, and nothing set while it runs
/// (a tenant, say) leaks into another's events. Costs next to nothing while Sentry is off.
pub fn with_own_hub<F: std::future::Future>(
    tags: &[(&str, String)],
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    use sentry::SentryFutureExt;
    let hub = std::sync::Arc::new(sentry::Hub::new_from_top(sentry::Hub::current()));
    hub.configure_scope(|scope| {
        for (k, v) in tags {
            scope.set_tag(k, v);
        }
    });
    fut.bind_hub(hub)
}

tokio::task_local! {
    static TENANT_SEEN: std::cell::Cell<Option<uuid::Uuid>>;
}

/// Runs `fut` (a request) and returns, with its output, the tenant it named through
/// [`tag_tenant`], if any: for per-tenant request metrics.
pub async fn noting_tenant<F: std::future::Future>(fut: F) -> (F::Output, Option<uuid::Uuid>) {
    TENANT_SEEN
        .scope(std::cell::Cell::new(None), async {
            let out = fut.await;
            (out, TENANT_SEEN.with(|t| t.get()))
        })
        .await
}

/// Names the tenant a request or job acts for, once known: on the current span (its
/// `tenant_id` field, when declared), as Sentry tags of the current hub (`tenant_id`, and
/// `tenant` when the slug is known), and for [`noting_tenant`].
pub fn tag_tenant(tenant_id: uuid::Uuid, slug: Option<&str>) {
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant_id));
    let _ = TENANT_SEEN.try_with(|t| t.set(Some(tenant_id)));
    sentry::configure_scope(|scope| {
        scope.set_tag("tenant_id", tenant_id);
        if let Some(slug) = slug {
            scope.set_tag("tenant", slug);
        }
    });
}

/// Sentry gets `ERROR` events only (one event per failure worth a look); everything else
/// stays in the logs. The layer does nothing while Sentry is not initialised.
fn sentry_errors<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    sentry::integrations::tracing::ErrorLayer::new()
        .with_filter(tracing_subscriber::filter::LevelFilter::ERROR)
}

/// Installs the log subscriber only (commands that do not need Sentry, traces or metrics).
pub fn init_logs(filter: &str, format: LogFormat) {
    install(filter, Some(format), None, None);
}

/// Installs what an admin command (`leadq tenant …`, `leadq migrate`, …) logs with: the
/// process-wide scrubber with the configured extra patterns (`LEADQ_SCRUB_PATTERNS`), as
/// [`init`] does for the services, then the log subscriber only.
pub fn init_command_logs(settings: &Settings) {
    install_scrubber(settings);
    init_logs(&settings.log_filter, settings.log_format);
}

/// Makes the scrubber with `settings`' extra patterns the process-wide one (the built-in rules
/// alone when a pattern does not compile: config checking reports it).
fn install_scrubber(settings: &Settings) {
    if let Ok(s) = crate::scrub::Scrubber::new(&settings.scrub_patterns) {
        crate::scrub::install(s);
    }
}

/// Installs the process's subscriber: `filter` for everything, log lines on stderr in `format`
/// (none when `None`), Sentry's error layer, spans to `tracer` and `extra` when given. A second
/// call keeps the first subscriber.
fn install(
    filter: &str,
    format: Option<LogFormat>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    extra: Option<ExtraLayer>,
) {
    use tracing_subscriber::Layer;
    if let Some(format) = format {
        panic::set_format(format);
    }
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        None => None,
        Some(LogFormat::Json) => Some(
            fmt::layer()
                .json()
                .with_current_span(false)
                .with_span_list(true)
                .flatten_event(true)
                .with_writer(crate::scrub::scrubbing_stderr())
                .boxed(),
        ),
        Some(LogFormat::Pretty) => Some(
            fmt::layer()
                .with_writer(crate::scrub::scrubbing_stderr())
                .boxed(),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(extra)
        .with(filter)
        .with(tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t)))
        .with(logs)
        .with(sentry_errors())
        .try_init();
}
