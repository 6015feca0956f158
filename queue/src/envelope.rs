//! The one message format every job travels in.
//!
//! Producers of any version and workers of any version share queues during a rolling deploy,
//! so the envelope only ever *gains* optional fields: never rename, never remove, never
//! `deny_unknown_fields`. `schema_version` says which fields the producer knew about.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The envelope version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// A job as it sits in Redis.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Envelope format version (see [`SCHEMA_VERSION`]).
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
    /// HMAC of every other field, set by the queue at enqueue (see [`crate::signing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// An envelope signature.
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
    /// The tenant runs this kind in shadow mode: do the work, record what would have
    /// happened, change nothing. Set by the authorization layer, never by the message.
    pub shadow: bool,
}

/// Whether `s` is acceptable as a message or correlation id: 1-128 printable ASCII characters
/// without spaces (they end up in Redis key names and log lines).
pub fn valid_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}
