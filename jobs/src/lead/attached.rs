//! What a job records with its lead change, besides the lead's fields: the consent a
//! `lead_score` job carries, the incoming message of a Chatwoot `message_created` event, or
//! the audit entry of an integration's event that changes only the contact.
//!
//! Why a type of its own: all three go through the group commit ([`super::group`]), which
//! writes each job's extras in the same statement as the leads, and through
//! [`super::handler::alone`] when a batch fails. What differs between them — the rows besides
//! the lead version, the audit entries, the kind a shadow comparison is filed under — is
//! spelled here once, for both paths.

use chrono::{DateTime, Utc};

use crate::lead::store::{Applied, Message};
use crate::lead::Consent;
use leadq_queue::envelope::JobMeta;

/// What a job records with its lead change.
#[derive(Debug, Clone)]
pub enum Attached {
    /// A `lead_score` job: the consent it carries, if any (a `lead.consent` audit entry).
    Score(Option<Consent>),
    /// An integration's incoming message: stored once per source id (it counts towards the
    /// lead's score), audited under the integration's action.
    Message(Inbound),
    /// An integration's event that brings only the contact's fields (Chatwoot's
    /// `contact_created`, `contact_updated`): nothing stored besides the lead; one audit entry
    /// under the integration's action, whether or not the lead changed.
    Event(Event),
}

/// An integration's event as its audit entry names it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The job's kind (shadow comparisons are filed under it).
    pub kind: &'static str,
    /// The audit entry's action (`chatwoot.event`).
    pub action: &'static str,
    /// The integration's event name, recorded in the audit entry.
    pub event: String,
}

/// An incoming message as a job hands it to the lead store, owned (it waits in a group
/// commit's queue), its text in clear: the store seals it when it writes it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The event that brought it, as its audit entry names it.
    pub event: Event,
    /// The integration it came from (`chatwoot`).
    pub source: &'static str,
    /// Its id there; a message is stored once per `(tenant, source, source_id)`.
    pub source_id: String,
    /// The conversation it belongs to, when the integration says.
    pub conversation_id: Option<i64>,
    /// Its text, if any.
    pub content: Option<String>,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

impl Inbound {
    /// The message as the lead store's single-job path takes it.
    pub fn message(&self) -> Message<'_> {
        Message {
            source: self.source,
            source_id: &self.source_id,
            conversation_id: self.conversation_id,
            content: self.content.as_deref(),
            sent_at: self.sent_at,
        }
    }
}

impl Attached {
    /// The kind a shadow comparison of this job is filed under.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Attached::Score(_) => crate::kinds::LEAD_SCORE,
            Attached::Message(Inbound { event, .. }) | Attached::Event(event) => event.kind,
        }
    }

    /// The message to store with the change, if any.
    pub(super) fn message(&self) -> Option<&Inbound> {
        match self {
            Attached::Score(_) | Attached::Event(_) => None,
            Attached::Message(m) => Some(m),
        }
    }

    /// What the job records in the audit trail, as `(action, subject, details)`.
    ///
    /// A `lead_score` job: the new version (`lead.score`) when the change made one, and the
    /// consent it carries (`lead.consent`), if any. A message: one entry whether or not the
    /// lead changed (the message is stored either way), with the event, version and score; an
    /// event the same.
    pub(super) fn audit_entries(
        &self,
        meta: &JobMeta,
        applied: &Applied,
    ) -> Vec<(&'static str, String, serde_json::Value)> {
        let subject = format!("lead:{}", applied.lead_id);
        let mut entries = Vec::new();
        match self {
            Attached::Score(consent) => {
                if applied.changed {
                    entries.push((
                        "lead.score",
                        subject.clone(),
                        serde_json::json!({
                            "job_id": meta.job_id, "attempt": meta.attempt,
                            "version": applied.version,
                            "score": applied.score.score, "tier": applied.score.tier,
                        }),
                    ));
                }
                if let Some(c) = consent {
                    entries.push((
                        "lead.consent",
                        subject,
                        serde_json::json!({
                            "marketing": c.marketing, "given_at": c.given_at,
                            "text_version": c.text_version, "job_id": meta.job_id,
                        }),
                    ));
                }
            }
            Attached::Message(Inbound { event, .. }) | Attached::Event(event) => {
                entries.push(event_entry(event.action, &event.event, meta, applied))
            }
        }
        entries
    }
}

/// The audit entry of an integration's event applied to a lead, as `(action, subject,
/// details)`: the event's name, the job, the lead's version and score after it.
pub fn event_entry(
    action: &'static str,
    event: &str,
    meta: &JobMeta,
    applied: &Applied,
) -> (&'static str, String, serde_json::Value) {
    (
        action,
        format!("lead:{}", applied.lead_id),
        serde_json::json!({
            "event": event, "job_id": meta.job_id,
            "version": applied.version, "score": applied.score.score,
        }),
    )
}
