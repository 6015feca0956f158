//! The `tracing` layer that turns ERROR events into alerts, and the panic hook.
//!
//! An ERROR event becomes an [`Alert`]: its message is the title, `code` the kind (`error`
//! when absent), its `file:line` the location; `error`, `error.cause_chain`, `detail` and
//! `cause` are the cause chain; `route` (of the event or of an enclosing span, such as the
//! API's request span) is the path; the other fields of the event and the ids of the
//! enclosing spans (`correlation_id`, `tenant_id`, `kind`, `job_id`) are fields. It is
//! critical when it says `critical = true` or its code means a dependency is down.
//!
//! Skipped, so that nothing is alerted twice and nothing loops:
//! - events with `alerted = true`: their failure is alerted by its own path (a dead letter
//!   is alerted by the worker's observer, with the tenant's slug);
//! - events of this crate's target (the sender's own errors), and any event raised while the
//!   alert pipeline itself is running (Redis or HTTP errors inside it).

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::alert::{Alert, Severity, DEPENDENCY_DOWN_CODES};
use crate::Notifier;

/// Span fields copied onto alerts (the rest of a span is not needed to find the error).
const SPAN_FIELDS: &[&str] = &[
    "route",
    "correlation_id",
    "tenant_id",
    "kind",
    "job_id",
    "method",
];
/// Event fields that hold the error and its causes.
const CAUSE_FIELDS: &[&str] = &["error", "error.cause_chain", "detail", "cause"];

tokio::task_local! {
    /// Set while the alert pipeline runs: events raised inside it are never alerted.
    pub(crate) static IN_PIPELINE: ();
}

fn inside_pipeline() -> bool {
    IN_PIPELINE.try_with(|_| ()).is_ok()
}

/// Turns ERROR events into alerts (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct AlertLayer {
    /// `None`: the process-wide notifier ([`crate::global`]), looked up at each event.
    notifier: Option<Notifier>,
}

impl AlertLayer {
    /// Reports to the process-wide notifier, once it is installed ([`crate::start`]).
    pub fn global() -> Self {
        Self { notifier: None }
    }

    /// Reports to `notifier` (tests, or a process with several).
    pub fn to(notifier: Notifier) -> Self {
        Self {
            notifier: Some(notifier),
        }
    }
}

#[derive(Default)]
struct SpanFields(Vec<(&'static str, String)>);

impl Visit for SpanFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if SPAN_FIELDS.contains(&field.name()) {
            self.0.retain(|(k, _)| *k != field.name());
            self.0.push((field.name(), format!("{value:?}")));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if SPAN_FIELDS.contains(&field.name()) {
            self.0.retain(|(k, _)| *k != field.name());
            self.0.push((field.name(), value.to_owned()));
        }
    }
}

#[derive(Default)]
struct EventFields {
    message: String,
    code: Option<String>,
    causes: Vec<String>,
    fields: Vec<(String, String)>,
    alerted: bool,
    critical: bool,
}

impl Visit for EventFields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            "alerted" => self.alerted = value,
            "critical" => self.critical = value,
            name => self.fields.push((name.to_owned(), value.to_string())),
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field.name(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.record(field.name(), s);
    }
}

impl EventFields {
    fn record(&mut self, name: &str, value: String) {
        match name {
            "message" => self.message = value,
            "code" => self.code = Some(value),
            n if CAUSE_FIELDS.contains(&n) => self.causes.push(value),
            n => self.fields.push((n.to_owned(), value)),
        }
    }
}

impl<S> Layer<S> for AlertLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut v = SpanFields::default();
        attrs.record(&mut v);
        if let (false, Some(span)) = (v.0.is_empty(), ctx.span(id)) {
            span.extensions_mut().insert(v);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(v) = ext.get_mut::<SpanFields>() {
            values.record(v);
        } else {
            let mut v = SpanFields::default();
            values.record(&mut v);
            if !v.0.is_empty() {
                ext.insert(v);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR
            || meta.target().starts_with(env!("CARGO_CRATE_NAME"))
            || inside_pipeline()
        {
            return;
        }
        let Some(notifier) = self.notifier.as_ref().or_else(|| crate::global()) else {
            return;
        };
        let mut v = EventFields::default();
        event.record(&mut v);
        if v.alerted {
            return;
        }
        let mut path = v
            .fields
            .iter()
            .find(|(k, _)| k == "route" || k == "path")
            .map(|(_, p)| p.clone());
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                let ext = span.extensions();
                let Some(f) = ext.get::<SpanFields>() else {
                    continue;
                };
                for (k, val) in &f.0 {
                    if *k == "route" {
                        path.get_or_insert_with(|| val.clone());
                    } else if !v.fields.iter().any(|(name, _)| name == k) {
                        v.fields.push(((*k).to_owned(), val.clone()));
                    }
                }
            }
        }
        let kind = v.code.unwrap_or_else(|| "error".to_owned());
        let severity = if v.critical || DEPENDENCY_DOWN_CODES.contains(&kind.as_str()) {
            Severity::Critical
        } else {
            Severity::NonCritical
        };
        let location = match (meta.file(), meta.line()) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            _ => meta.target().to_owned(),
        };
        let title = if v.message.is_empty() {
            meta.name().to_owned()
        } else {
            v.message
        };
        let mut alert = Alert::new(severity, kind, title).at(location);
        alert.fields = v.fields;
        alert.causes = v.causes;
        alert.path = path;
        notifier.report(alert);
    }
}

/// Makes panics alerts (critical, kind `panic`, the panic's location and message, and up to
/// `max_trace_lines` frames of leadq's own code from the backtrace), then runs the hook that
/// was installed before. Reports to the process-wide notifier.
pub fn install_panic_hook(max_trace_lines: usize) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let (Some(n), false) = (crate::global(), inside_pipeline()) {
            n.report(panic_alert(info, max_trace_lines));
        }
        previous(info);
    }));
}

fn panic_alert(info: &std::panic::PanicHookInfo<'_>, max_trace_lines: usize) -> Alert {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned());
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let mut alert = Alert::new(Severity::Critical, "panic", format!("Panic: {message}"))
        .at(location.clone())
        .field("location", location);
    if let Some(thread) = std::thread::current().name() {
        alert = alert.field("thread", thread);
    }
    if max_trace_lines > 0 {
        let trace = std::backtrace::Backtrace::force_capture().to_string();
        alert.causes = trace
            .lines()
            .map(str::trim)
            .filter(|l| l.contains("leadq") && !l.contains("leadq_notify"))
            .take(max_trace_lines)
            .map(str::to_owned)
            .collect();
    }
    alert
}
