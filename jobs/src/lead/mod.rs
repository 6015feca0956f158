//! Leads: the domain every lead-changing job shares.
//!
//! A lead is keyed by `(tenant_id, external_id)`. Whoever changes one — the `lead_score` job
//! (API, Telegram bot) or the `chatwoot_event` job — goes through the [`store`], so merging,
//! scoring, versioning and the CRM sync request follow one set of rules. Dependencies point
//! inwards: integrations and operator actions use this module, never the other way round.
//!
//! # Layout
//! - [`LeadInput`] / [`FieldError`] (`input.rs`): the change as producers send it, validated.
//! - [`LeadPayload`] / [`LeadInputV2`] / [`Consent`] (`input_v2.rs`): the `lead_score` payload
//!   versions workers read (1, and 2 with typed answers and consent), normalized to
//!   [`LeadInput`].
//! - [`Attached`] / [`Inbound`] / [`Event`] (`attached.rs`): what a job records with its
//!   change besides the lead's fields (a consent, an incoming message, an integration's
//!   event), and the audit entries that follow.
//! - [`store`]: merge a change, score it, version it, keep the score history, want a CRM sync.
//! - [`scoring`]: the explainable rules, per-tenant weights and thresholds, tiers.
//! - [`handler`]: the `lead_score` job.
//! - [`group`]: group commit: the lead changes of a tenant that are ready together
//!   (`lead_score` jobs, Chatwoot messages), written in one transaction.
//! - [`shadow`]: candidate scoring rules run beside the live ones; the comparison report.
//! - [`sync`]: the CRM sync request a changed lead may need (the `crm_sync` payload).
//! - [`erase`] / [`Erased`] (`erase.rs`): the right to be forgotten.
//! - [`export`]: a tenant's leads as CSV with personal fields replaced by tokens.
//! - [`erase_by_contact`] (`erase_contact.rs`): the same for a person known only by an email
//!   or a phone number (blind index).

mod attached;
mod erase;
mod erase_contact;
pub mod export;
pub mod group;
pub mod handler;
mod input;
mod input_v2;
pub mod scoring;
pub mod shadow;
pub mod store;
pub mod sync;
mod write;

pub use attached::{event_entry, Attached, Event, Inbound};
pub use erase::{erase, EraseError, Erased};
pub use erase_contact::{erase_by_contact, ContactField, ErasedByContact, ErasedLead};
pub use input::{plausible_email, plausible_phone, FieldError, LeadInput};
pub use input_v2::{Answer, Consent, LeadInputV2, LeadPayload};
