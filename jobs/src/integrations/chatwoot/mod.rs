//! `chatwoot_event`: Chatwoot's outgoing webhooks, verified, normalised and applied to leads.
//!
//! The contract ([`docs/contracts/chatwoot.md`](../../../../docs/contracts/chatwoot.md), read from
//! Chatwoot 4.15.1's code) shapes all of this:
//! - the signature is `sha256=` HMAC-SHA256(secret, `"<X-Chatwoot-Timestamp>.<raw body>"`)
//!   over the **raw bytes** (Chatwoot escapes `<`, `>`, `&` as `\u003c`…; re-serialising
//!   would change them), compared in constant time; timestamps more than
//!   [`REPLAY_WINDOW_SECS`] away from now are refused ([`verify`]);
//! - account webhooks are never retried, so the receiver verifies, normalises and enqueues
//!   within Chatwoot's 5 s budget, and does the work in this job ([`handler::run`]);
//! - the same field has different types in different places (`message_type` as word and as
//!   number; times as ISO strings, integer and float Unix seconds), conversation ids are
//!   per-account display ids, and private notes arrive as `outgoing` messages: [`normalize()`]
//!   tolerates all of it and keeps only what the handler needs, with personal data sealed.
//!
//! Events acted on: incoming, non-private `message_created` (attach the message to the
//! contact's lead, creating it if needed, and re-score); `conversation_created` and
//! `conversation_status_changed` (the lead's conversation state, newest first);
//! `contact_created` and `contact_updated` (the lead's contact fields, re-scored). Everything
//! else is answered 2xx and counted as `ignored`.
//!
//! # Layout
//! - `signature.rs`: the signature ([`verify`], [`sign`], [`REPLAY_WINDOW_SECS`], [`Rejected`]).
//! - `event.rs`: the `chatwoot_event` payload ([`EventInput`], [`Contact`], [`Change`]) and
//!   [`seal`].
//! - `normalize.rs`: a verified body → [`Normalized`] or [`Malformed`] ([`normalize()`],
//!   [`time`], [`MAX_BODY_BYTES`]).
//! - [`handler`]: the `chatwoot_event` job, which changes leads only through the lead store.

mod event;
pub mod handler;
mod normalize;
mod signature;

pub use event::{seal, Change, Contact, EventInput};
pub use normalize::{normalize, time, Malformed, Normalized, MAX_BODY_BYTES};
pub use signature::{sign, verify, Rejected, REPLAY_WINDOW_SECS};
