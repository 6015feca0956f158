//! The integrations: one folder per neighbour, each holding its contract types, its
//! normalisation, its handler and what it needs of the tenant's settings. What an integration
//! changes in a lead goes through the lead store ([`crate::lead`]); personal data it receives
//! is sealed ([`crate::pii`]) before it is queued. The contract facts each one relies on are in
//! `docs/contracts/`.
//!
//! # Layout
//! - [`chatwoot`]: Chatwoot's signed webhooks and the `chatwoot_event` job.
//! - [`telegram`]: Telegram Bot API updates → lead changes (`lead_score` jobs).
//! - [`hubspot`]: the `crm_sync` job: batch upserts into the tenant's HubSpot.
//! - [`settings`]: per-tenant integration settings and their secrets (sealed or hashed).

pub mod chatwoot;
pub mod hubspot;
pub mod settings;
pub mod telegram;
