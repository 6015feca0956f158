//! Logs, Sentry and the metrics recorder, set up once per process.
//!
//! Logs are JSON lines on **stderr** (stdout belongs to commands that print results, such as
//! `leadq tenant create` and `leadq bench`). Spans carry `correlation_id` and `tenant_id`, and
//! the JSON formatter writes the fields of every enclosing span on each line, so every line of
//! a request or a job names both. Every line, and every Sentry event, passes through the
//! scrubber ([`crate::scrub`]) first.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, Settings};

/// Keeps Sentry flushing until dropped; hold it for the life of `main`.
pub struct TelemetryGuard {
    _sentry: Option<sentry::ClientInitGuard>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("sentry", &self._sentry.is_some())
            .finish()
    }
}

/// A layer added to the log subscriber by a crate above this one (the error-alert layer of
/// `leadq-notify`). It sits next to the registry, so it sees every event the filter lets
/// through, like the log and Sentry layers.
pub type ExtraLayer =
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static>;

/// Installs the log subscriber, Sentry (when `SENTRY_DSN` is set) and the metrics recorder.
pub fn init(settings: &Settings) -> TelemetryGuard {
    init_with(settings, None)
}

/// Like [`init`], with one more layer on the subscriber (see [`ExtraLayer`]).
pub fn init_with(settings: &Settings, extra: Option<ExtraLayer>) -> TelemetryGuard {
    if let Ok(s) = crate::scrub::Scrubber::new(&settings.scrub_patterns) {
        crate::scrub::install(s);
    }
    init_logs_with(&settings.log_filter, settings.log_format, extra);
    crate::metrics::install();
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
    TelemetryGuard { _sentry: sentry }
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

/// Installs the log subscriber only (commands that do not need Sentry or metrics).
pub fn init_logs(filter: &str, format: LogFormat) {
    init_logs_with(filter, format, None);
}

fn init_logs_with(filter: &str, format: LogFormat, extra: Option<ExtraLayer>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(extra).with(filter);
    let res = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_span_list(true)
                    .flatten_event(true)
                    .with_writer(crate::scrub::scrubbing_stderr()),
            )
            .with(sentry_errors())
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(crate::scrub::scrubbing_stderr()))
            .with(sentry_errors())
            .try_init(),
    };
    // A second init (tests build several apps per process) keeps the first subscriber.
    let _ = res;
}
