//! Spans leave the process scrubbed, as log lines and Sentry events do.
//!
//! tracing-opentelemetry copies a span's fields into its attributes and every log event inside
//! it, with all its fields, into a span event: a job's failure and its cause chain, a request's
//! 5xx chain, a refused job's principal as the producer sent it. The stderr writer and Sentry's
//! `before_send` scrub what they carry; without this the same text would reach the collector
//! verbatim. [`Scrubbed`] wraps the OTLP exporter and passes every string of a batch — span and
//! event names, attribute values (a sensitive key's whole value: `[redacted]`), the status
//! message — through the process-wide scrubber ([`crate::scrub::global`]) before export.

use std::borrow::Cow;
use std::time::Duration;

use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::scrub::{self, Scrubber};

/// An exporter that scrubs each batch before `E` exports it.
#[derive(Debug)]
pub(super) struct Scrubbed<E>(pub(super) E);

impl<E: SpanExporter> SpanExporter for Scrubbed<E> {
    fn export(
        &self,
        mut batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let s = scrub::global();
        batch.iter_mut().for_each(|span| scrub_span(s, span));
        self.0.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Every string `span` would export, scrubbed where it stands.
pub(super) fn scrub_span(s: &Scrubber, span: &mut SpanData) {
    scrub_cow(s, &mut span.name);
    scrub_attributes(s, &mut span.attributes);
    for event in span.events.events.iter_mut() {
        scrub_cow(s, &mut event.name);
        scrub_attributes(s, &mut event.attributes);
    }
    for link in span.links.links.iter_mut() {
        scrub_attributes(s, &mut link.attributes);
    }
    if let opentelemetry::trace::Status::Error { description } = &mut span.status {
        scrub_cow(s, description);
    }
}

fn scrub_cow(s: &Scrubber, text: &mut Cow<'static, str>) {
    if let Cow::Owned(clean) = s.scrub(text) {
        *text = Cow::Owned(clean);
    }
}

fn scrub_attributes(s: &Scrubber, attributes: &mut [KeyValue]) {
    for kv in attributes {
        if scrub::is_sensitive_key(kv.key.as_str()) && !matches!(kv.value, Value::Bool(_)) {
            kv.value = Value::String(scrub::REDACTED.into());
            continue;
        }
        match &mut kv.value {
            Value::String(v) => scrub_string(s, v),
            Value::Array(Array::String(items)) => items.iter_mut().for_each(|v| scrub_string(s, v)),
            _ => {}
        }
    }
}

fn scrub_string(s: &Scrubber, v: &mut StringValue) {
    if let Cow::Owned(clean) = s.scrub(v.as_str()) {
        *v = clean.into();
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    const DSN: &str = "postgres://admin:hunter2hunter2@db.internal:5432/leadq";

    fn span() -> SpanData {
        let mut events = SpanEvents::default();
        events.events.push(opentelemetry::trace::Event::new(
            format!("Refusing a job: {DSN}"),
            std::time::SystemTime::now(),
            vec![
                KeyValue::new("user_id", format!("api_key:Bearer {DSN}")),
                KeyValue::new("authorization", "Bearer abcdef0123456789abcdef"),
                KeyValue::new("attempt", 2),
            ],
            0,
        ));
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Consumer,
            name: "process lead_score".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: vec![
                KeyValue::new("messaging.message.id", format!("m {DSN}")),
                KeyValue::new("kind", "lead_score"),
            ],
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: Status::error(format!("failed: {DSN}")),
            instrumentation_scope: InstrumentationScope::builder("leadq").build(),
        }
    }

    #[test]
    fn every_string_of_a_span_is_scrubbed_and_the_rest_is_kept() {
        let mut span = span();
        scrub_span(&Scrubber::new(&[]).unwrap(), &mut span);
        let text = format!("{span:?}");
        assert!(!text.contains("hunter2hunter2"), "{text}");
        assert!(!text.contains("abcdef0123456789abcdef"), "{text}");
        assert_eq!(span.name, "process lead_score");
        assert!(span
            .attributes
            .contains(&KeyValue::new("kind", "lead_score")));
        let event = &span.events.events[0];
        assert!(event.name.starts_with("Refusing a job: "), "{}", event.name);
        assert!(event.attributes.contains(&KeyValue::new("attempt", 2)));
        assert!(event
            .attributes
            .contains(&KeyValue::new("authorization", scrub::REDACTED)));
    }
}
