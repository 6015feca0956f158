//! The one message format every job travels in.
//!
//! Producers of any version and workers of any version share queues during a rolling deploy,
//! so the envelope only ever *gains* optional fields: never rename, never remove, never
//! `deny_unknown_fields`. `schema_version` says which fields the producer knew about, and
//! which version of the kind's payload it wrote: the worker reads the payload for that version
//! ([`crate::payload`]), and dead-letters one it does not read as `unsupported_version`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The envelope version this build writes by default, and the version of every payload that
/// never changed. A producer sets a later one ([`Envelope::schema_version`]) only for content
/// the earlier one cannot carry (README, "Payload versions").
pub const SCHEMA_VERSION: u32 = 1;

/// A job as it sits in Redis.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Envelope and payload format version (see [`SCHEMA_VERSION`]); a worker dead-letters a
    /// version its kind does not read as `unsupported_version`.
    pub schema_version: u32,
    /// Producer-chosen unique id of the message; enqueueing the same id twice (per tenant and
    /// kind, within the dedupe TTL) enqueues one job.
    pub message_id: String,
    /// The tenant the job acts for.
    pub tenant_id: Uuid,
    /// The principal (actor) that caused the job, e.g. `api_key:<id>`.
    pub user_id: String,
    /// The job kind, e.g. `lead_score` (see `leadq_jobs::kinds`).
    pub action: String,
    /// Kind-specific payload.
    pub payload: serde_json::Value,
    /// When the producer created the message.
    pub timestamp: DateTime<Utc>,
    /// Ties together the request, the job and every log line and audit row they cause.
    pub correlation_id: String,
    /// W3C trace context (`traceparent`, `tracestate`) of the span that enqueued the job, set
    /// by the queue at enqueue *before* signing, so a forged one is refused like any other
    /// alteration. Empty when tracing is off, and from producers that predate it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace_context: BTreeMap<String, String>,
    /// HMAC of every other field, set by the queue at enqueue (see [`crate::signing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl Envelope {
    /// A new message of this build's version for `tenant_id`, caused by `user_id`, asking for
    /// the job kind `action`: stamped now, unsigned (the queue signs it at enqueue). Its message
    /// id is fresh (so it never dedupes) and doubles as its correlation id until a producer
    /// sets either with [`Envelope::message_id`] / [`Envelope::correlation_id`].
    pub fn new(
        tenant_id: Uuid,
        user_id: impl Into<String>,
        action: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        let message_id = Uuid::now_v7().to_string();
        Self {
            schema_version: SCHEMA_VERSION,
            correlation_id: message_id.clone(),
            message_id,
            tenant_id,
            user_id: user_id.into(),
            action: action.into(),
            payload,
            timestamp: Utc::now(),
            trace_context: BTreeMap::new(),
            signature: None,
        }
    }

    /// Sets the message id: the producer's idempotency key (see [`Envelope::message_id`]).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = id.into();
        self
    }

    /// Sets the version the payload is written in (its kind's payload type must read it, see
    /// [`crate::payload::Payload`]).
    pub fn schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }

    /// Sets the correlation id the request, the job and its follow-ups share.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = id.into();
        self
    }
}

/// An envelope signature.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signature {
    /// Id of the key that signed.
    pub kid: String,
    /// Base64 HMAC-SHA256 of the canonical form.
    pub hmac: String,
}

/// Everything in the envelope but the payload: what a handler needs to know about its job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobMeta {
    /// Queue-assigned job id.
    pub job_id: Uuid,
    /// 1 for the first run.
    pub attempt: u32,
    /// See [`Envelope::schema_version`].
    pub schema_version: u32,
    /// See [`Envelope::message_id`].
    pub message_id: String,
    /// See [`Envelope::tenant_id`].
    pub tenant_id: Uuid,
    /// See [`Envelope::user_id`].
    pub user_id: String,
    /// See [`Envelope::action`].
    pub action: String,
    /// See [`Envelope::timestamp`].
    pub timestamp: DateTime<Utc>,
    /// See [`Envelope::correlation_id`].
    pub correlation_id: String,
    /// See [`Envelope::trace_context`]: every run of the job continues and links to it.
    pub trace_context: BTreeMap<String, String>,
    /// The tenant runs this kind in shadow mode: do the work, record what would have
    /// happened, change nothing. Set by the authorization layer, never by the message.
    pub shadow: bool,
}

impl JobMeta {
    /// The job's actor, tenant and correlation id, for its audit entries.
    pub fn auditor(&self) -> leadq_platform::audit::Auditor<'_> {
        leadq_platform::audit::Auditor {
            tenant_id: Some(self.tenant_id),
            actor: &self.user_id,
            correlation_id: &self.correlation_id,
        }
    }
}

/// Whether `s` is acceptable as a message or correlation id: 1-128 printable ASCII characters
/// without spaces (they end up in Redis key names and log lines).
pub fn valid_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_envelope_is_current_unsigned_and_carries_what_it_was_given() {
        let tenant = Uuid::new_v4();
        let before = Utc::now();
        let e = Envelope::new(
            tenant,
            "api_key:k1",
            "lead_score",
            serde_json::json!({"a": 1}),
        );
        assert_eq!(e.schema_version, SCHEMA_VERSION);
        assert_eq!(e.signature, None);
        assert_eq!((e.tenant_id, e.user_id.as_str()), (tenant, "api_key:k1"));
        assert_eq!(e.action, "lead_score");
        assert_eq!(e.payload, serde_json::json!({"a": 1}));
        assert!(e.timestamp >= before && e.timestamp <= Utc::now());
        assert!(valid_id(&e.message_id));
        assert_eq!(e.correlation_id, e.message_id);
        // Two new envelopes never share a message id (they would dedupe).
        let other = Envelope::new(tenant, "x", "lead_score", serde_json::Value::Null);
        assert_ne!(other.message_id, e.message_id);

        let e = e.message_id("m-1").correlation_id("c-1");
        assert_eq!(
            (e.message_id.as_str(), e.correlation_id.as_str()),
            ("m-1", "c-1")
        );
    }
}
