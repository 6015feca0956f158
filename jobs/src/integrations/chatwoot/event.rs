//! The `chatwoot_event` payload: the minimal, normalised event the endpoint enqueues and the
//! handler applies, and the sealing of the personal data it carries (Redis never holds it in
//! clear). Its serialised form is the queue's wire format: changing a field changes what
//! queued jobs mean.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Contact fields from Chatwoot. `email` and `phone` are sealed in the job payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// Chatwoot's contact id.
    pub id: i64,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<String>,
}

/// What a `chatwoot_event` job does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// An incoming message from the contact.
    Message {
        /// Chatwoot's message id.
        message_id: i64,
        /// Conversation display id (per account).
        conversation_id: Option<i64>,
        /// Text (sealed), if any.
        content: Option<String>,
    },
    /// A conversation was created or changed status.
    Conversation {
        /// Conversation display id (per account).
        conversation_id: i64,
        /// `open`, `resolved`, `pending` or `snoozed`.
        status: String,
    },
    /// An agent replied in a conversation (an outgoing, non-private message sent by a user):
    /// the end of the contact's wait, for the chat SLA.
    Reply {
        /// Chatwoot's message id.
        message_id: i64,
        /// Conversation display id (per account).
        conversation_id: i64,
    },
    /// The contact was created or changed.
    Contact,
}

/// The `chatwoot_event` payload: a normalised, minimal event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInput {
    /// The Chatwoot event name.
    pub event: String,
    /// The Chatwoot account (checked against the tenant's at the endpoint).
    pub account_id: i64,
    /// The lead's id: `cw-<account>-<contact id>`.
    pub external_id: String,
    /// The contact as the event shows it.
    pub contact: Contact,
    /// When it happened, as Chatwoot says (the time of receipt when it says nothing).
    pub occurred_at: DateTime<Utc>,
    /// What to do.
    pub change: Change,
}

// One version so far (`leadq_queue::payload`).
leadq_queue::v1_payload!(EventInput);

/// Seals the personal data of a normalised event for the queue.
pub fn seal(input: &mut EventInput, tenant: Uuid, sealer: &crate::pii::Sealer) {
    sealer.seal_contact(tenant, &mut input.contact.email, &mut input.contact.phone);
    if let Change::Message { content, .. } = &mut input.change {
        sealer.seal_in_place(tenant, crate::pii::field::CONTENT, content);
    }
}
