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
//!   per-account display ids, and private notes arrive as `outgoing` messages: [`normalize`]
//!   tolerates all of it and keeps only what the handler needs, with personal data sealed.
//!
//! Events acted on: incoming, non-private `message_created` (attach the message to the
//! contact's lead, creating it if needed, and re-score); `conversation_created` and
//! `conversation_status_changed` (the lead's conversation state, newest first);
//! `contact_created` and `contact_updated` (the lead's contact fields, re-scored). Everything
//! else is answered 2xx and counted as `ignored`.
//!
//! # Layout
//! - `mod.rs`: the contract: signature ([`verify`], [`sign`]), the event types, [`normalize`],
//!   [`seal`].
//! - [`handler`]: the `chatwoot_event` job, which changes leads only through the lead store.

use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub mod handler;

/// How far `X-Chatwoot-Timestamp` may be from now, either way, in seconds.
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// The largest body accepted (a genuine maximal message is about 2.7 MB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Why a delivery failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Signature or timestamp header missing, malformed or wrong.
    #[error("missing or invalid signature")]
    BadSignature,
    /// A valid signature, but the timestamp is outside the replay window.
    #[error("timestamp outside the replay window")]
    Stale,
}

/// Verifies a delivery: `signature` must be `sha256=<hex>` of HMAC-SHA256(`secret`,
/// `"<timestamp>.<body>"`), and `timestamp` within [`REPLAY_WINDOW_SECS`] of `now`.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Rejected> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(Rejected::BadSignature);
    };
    let expected = sig
        .strip_prefix("sha256=")
        .filter(|h| h.len() == 64)
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Rejected::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Rejected::BadSignature)?;
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&expected)
        .map_err(|_| Rejected::BadSignature)?;
    let ts: i64 = ts.trim().parse().map_err(|_| Rejected::BadSignature)?;
    if (now.timestamp() - ts).abs() > REPLAY_WINDOW_SECS {
        return Err(Rejected::Stale);
    }
    Ok(())
}

/// Signs a body as Chatwoot does (for tests, fixtures and `leadq` tooling).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

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

/// What the endpoint makes of a verified body.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    /// Enqueue this, deduplicated on `dedupe_key`.
    Event {
        /// The payload.
        input: Box<EventInput>,
        /// `(account, event, id)` (plus a digest of the body for `*_updated` and
        /// `*_status_changed` events, whose ids repeat across genuine changes).
        dedupe_key: String,
    },
    /// An event (or message) we do not act on.
    Ignored(&'static str),
}

/// Why a body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not JSON (or not UTF-8).
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// JSON of the wrong shape.
    #[error("{0}")]
    Shape(&'static str),
    /// The body's account is not the tenant's.
    #[error("account {0} is not the tenant's Chatwoot account")]
    WrongAccount(i64),
}

/// An integer sent as a number or as a numeric string.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A time in any of Chatwoot's three encodings: ISO-8601 string, integer or float Unix seconds.
pub fn time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| s.trim().parse::<f64>().ok().and_then(float_time)),
        Value::Number(n) => n
            .as_i64()
            .and_then(|s| Utc.timestamp_opt(s, 0).single())
            .or_else(|| n.as_f64().and_then(float_time)),
        _ => None,
    }
}

fn float_time(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() || !(0.0..1e11).contains(&secs) {
        return None;
    }
    let whole = secs.floor();
    // Exact enough for ordering: microseconds.
    let micros = ((secs - whole) * 1e6).round() as u32;
    Utc.timestamp_opt(whole as i64, micros.min(999_999) * 1000)
        .single()
}

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A contact from its webhook form (top-level `sender`, `contact_*` bodies) or push form
/// (`conversation.meta.sender`). `None` when `v` is not a contact (a user or a bot).
fn contact(v: &Value) -> Option<Contact> {
    let kind = v.get("type").and_then(Value::as_str);
    if kind.is_some_and(|k| k != "contact") {
        return None;
    }
    Some(Contact {
        id: int(v.get("id")?)?,
        name: v.get("name").and_then(text),
        email: v.get("email").and_then(text),
        phone: v.get("phone_number").and_then(text),
    })
}

/// Whether a message is incoming: `message_type` is `"incoming"` at the top level, `0` in
/// push form.
fn incoming(v: &Value) -> bool {
    match v.get("message_type") {
        Some(Value::String(s)) => s == "incoming",
        Some(n @ Value::Number(_)) => int(n) == Some(0),
        _ => false,
    }
}

/// The account id of a body: top-level `account.id` (every event since June 2026), else
/// `account_id` of the conversation's last message (older conversation events), else none.
fn account_of(body: &Value) -> Option<i64> {
    body.get("account")
        .and_then(|a| a.get("id"))
        .and_then(int)
        .or_else(|| {
            body.get("conversation")
                .unwrap_or(body)
                .get("messages")
                .and_then(|m| m.get(0))
                .and_then(|m| m.get("account_id"))
                .and_then(int)
        })
}

/// Verified bytes → what to enqueue. `account_id` is the tenant's configured account: a body
/// of another account is [`Malformed::WrongAccount`]; a body that names none (older Chatwoot
/// conversation events) is accepted on the strength of the tenant's own secret.
pub fn normalize(
    raw: &[u8],
    account_id: i64,
    received_at: DateTime<Utc>,
) -> Result<Normalized, Malformed> {
    let body: Value =
        serde_json::from_slice(raw).map_err(|e| Malformed::NotJson(json_error_label(&e)))?;
    if !body.is_object() {
        return Err(Malformed::Shape("body is not a JSON object"));
    }
    let event = body
        .get("event")
        .and_then(Value::as_str)
        .ok_or(Malformed::Shape("event is missing or not a string"))?
        .to_owned();
    match account_of(&body) {
        Some(a) if a != account_id => return Err(Malformed::WrongAccount(a)),
        _ => {}
    }
    let id = body.get("id").and_then(int);
    let (contact, occurred_at, change) = match event.as_str() {
        "message_created" => {
            // Private notes are delivered as outgoing messages; bots' and agents' messages
            // say nothing about the lead.
            if body.get("private").and_then(Value::as_bool) == Some(true) {
                return Ok(Normalized::Ignored("private note"));
            }
            if !incoming(&body) {
                return Ok(Normalized::Ignored("not an incoming message"));
            }
            let message_id = id.ok_or(Malformed::Shape("message id is missing or not a number"))?;
            let conversation = body.get("conversation");
            let contact = body
                .get("sender")
                .and_then(contact)
                .or_else(|| {
                    conversation
                        .and_then(|c| c.pointer("/meta/sender"))
                        .and_then(contact)
                })
                .ok_or(Malformed::Shape(
                    "incoming message without a contact sender",
                ))?;
            let at = body.get("created_at").and_then(time).unwrap_or(received_at);
            let content = body.get("content").and_then(text);
            if content
                .as_ref()
                .is_some_and(|c| c.chars().count() > 150_000)
            {
                return Err(Malformed::Shape("content is longer than Chatwoot allows"));
            }
            (
                contact,
                at,
                Change::Message {
                    message_id,
                    conversation_id: conversation.and_then(|c| c.get("id")).and_then(int),
                    content,
                },
            )
        }
        "conversation_created" | "conversation_status_changed" => {
            let conversation_id = id.ok_or(Malformed::Shape(
                "conversation id is missing or not a number",
            ))?;
            let status = body
                .get("status")
                .and_then(Value::as_str)
                .filter(|s| ["open", "resolved", "pending", "snoozed"].contains(s))
                .ok_or(Malformed::Shape(
                    "conversation status is missing or unknown",
                ))?
                .to_owned();
            let contact = body
                .pointer("/meta/sender")
                .and_then(contact)
                .ok_or(Malformed::Shape("conversation without a contact"))?;
            // updated_at is a float, timestamp/created_at integers.
            let at = ["updated_at", "timestamp", "created_at"]
                .iter()
                .find_map(|k| body.get(*k).and_then(time))
                .unwrap_or(received_at);
            (
                contact,
                at,
                Change::Conversation {
                    conversation_id,
                    status,
                },
            )
        }
        "contact_created" | "contact_updated" => {
            let contact = contact(&body).ok_or(Malformed::Shape("contact id is missing"))?;
            (contact, received_at, Change::Contact)
        }
        _ => return Ok(Normalized::Ignored("event not handled")),
    };
    let object_id = match &change {
        Change::Message { message_id, .. } => *message_id,
        Change::Conversation {
            conversation_id, ..
        } => *conversation_id,
        Change::Contact => contact.id,
    };
    let mut dedupe_key = format!("cw:{account_id}:{event}:{object_id}");
    if event.ends_with("_updated") || event.ends_with("_status_changed") {
        // Each subscribed webhook gets its own delivery id for the same change, but genuine
        // later changes of the same object repeat (account, event, id): tell them apart by
        // the body, which is identical across webhooks and differs between changes.
        let digest = Sha256::digest(raw);
        dedupe_key.push(':');
        dedupe_key.push_str(&hex::encode(&digest[..8]));
    }
    Ok(Normalized::Event {
        input: Box::new(EventInput {
            event,
            account_id,
            external_id: format!("cw-{account_id}-{}", contact.id),
            contact,
            occurred_at,
            change,
        }),
        dedupe_key,
    })
}

/// A JSON error's category and position, never the input.
fn json_error_label(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// Seals the personal data of a normalised event for the queue.
pub fn seal(input: &mut EventInput, tenant: Uuid, sealer: &crate::pii::Sealer) {
    sealer.seal_contact(tenant, &mut input.contact.email, &mut input.contact.phone);
    if let Change::Message { content, .. } = &mut input.change {
        sealer.seal_in_place(tenant, crate::pii::field::CONTENT, content);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"wJ2fQk8sXyZ3pLmN4rTvB6cD";

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000, 0).unwrap()
    }

    #[test]
    fn a_chatwoot_signature_over_the_raw_escaped_bytes_verifies() {
        let body = br#"{"content":"a \u003cb\u003e \u0026 c","event":"message_created"}"#;
        let ts = now().timestamp();
        let sig = sign(SECRET, ts, body);
        let tss = ts.to_string();
        assert_eq!(verify(SECRET, Some(&tss), Some(&sig), body, now()), Ok(()));
        // Re-serialised, the escapes are gone and the signature no longer matches.
        let reserialized =
            serde_json::to_vec(&serde_json::from_slice::<Value>(body).unwrap()).unwrap();
        assert_eq!(
            verify(SECRET, Some(&tss), Some(&sig), &reserialized, now()),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn missing_wrong_unprefixed_and_stale_signatures_are_refused() {
        let body = br#"{"event":"contact_created"}"#;
        let ts = now().timestamp();
        let tss = ts.to_string();
        let good = sign(SECRET, ts, body);
        assert_eq!(
            verify(SECRET, None, Some(&good), body, now()),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify(SECRET, Some(&tss), None, body, now()),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify(b"another secret", Some(&tss), Some(&good), body, now()),
            Err(Rejected::BadSignature)
        );
        // Issue #13809's variant: HMAC of the body alone.
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(body);
        let bare = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            verify(SECRET, Some(&tss), Some(&bare), body, now()),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify(
                SECRET,
                Some(&tss),
                Some(good.trim_start_matches("sha256=")),
                body,
                now()
            ),
            Err(Rejected::BadSignature)
        );
        for skew in [-301, 301] {
            let t = ts + skew;
            let sig = sign(SECRET, t, body);
            assert_eq!(
                verify(SECRET, Some(&t.to_string()), Some(&sig), body, now()),
                Err(Rejected::Stale),
                "{skew}"
            );
        }
        let t = ts - 299;
        assert_eq!(
            verify(
                SECRET,
                Some(&t.to_string()),
                Some(&sign(SECRET, t, body)),
                body,
                now()
            ),
            Ok(())
        );
    }

    #[test]
    fn times_in_all_three_encodings_parse() {
        let iso = time(&json!("2026-06-17T10:00:00.123Z")).unwrap();
        let int = time(&json!(1_781_690_400)).unwrap();
        let float = time(&json!(1_781_690_400.123_456)).unwrap();
        assert_eq!(iso.timestamp_subsec_millis(), 123);
        assert_eq!(int.timestamp(), 1_781_690_400);
        assert_eq!(float.timestamp(), 1_781_690_400);
        assert_eq!(float.timestamp_subsec_micros(), 123_456);
        assert_eq!(time(&json!(null)), None);
        assert_eq!(time(&json!("yesterday")), None);
    }

    fn message(private: bool, message_type: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "account": {"id": 7, "name": "Acme"},
            "content": "Hi <there> & hello",
            "conversation": {"id": 3, "meta": {"sender": {"id": 42, "name": "Ada", "type": "contact"}}},
            "created_at": "2026-06-17T10:00:00.000Z",
            "id": 901,
            "message_type": message_type,
            "private": private,
            "sender": {"id": 42, "name": "Ada", "email": "ada@example.com", "phone_number": "+4420"},
            "event": "message_created"
        }))
        .unwrap()
    }

    #[test]
    fn incoming_messages_become_events_and_notes_and_outgoing_are_ignored() {
        let Normalized::Event { input, dedupe_key } =
            normalize(&message(false, json!("incoming")), 7, now()).unwrap()
        else {
            panic!("expected an event")
        };
        assert_eq!(dedupe_key, "cw:7:message_created:901");
        assert_eq!(input.external_id, "cw-7-42");
        assert_eq!(input.contact.email.as_deref(), Some("ada@example.com"));
        assert!(matches!(
            input.change,
            Change::Message {
                message_id: 901,
                conversation_id: Some(3),
                ..
            }
        ));
        // message_type as a number (push form) is tolerated.
        assert!(matches!(
            normalize(&message(false, json!(0)), 7, now()),
            Ok(Normalized::Event { .. })
        ));
        assert!(matches!(
            normalize(&message(true, json!("outgoing")), 7, now()),
            Ok(Normalized::Ignored(_))
        ));
        assert!(matches!(
            normalize(&message(false, json!("outgoing")), 7, now()),
            Ok(Normalized::Ignored(_))
        ));
        assert!(matches!(
            normalize(&message(false, json!(1)), 7, now()),
            Ok(Normalized::Ignored(_))
        ));
        assert_eq!(
            normalize(&message(false, json!("incoming")), 8, now()),
            Err(Malformed::WrongAccount(7))
        );
    }

    #[test]
    fn updated_events_of_the_same_object_dedupe_by_body() {
        let a = serde_json::to_vec(
            &json!({"event":"contact_updated","id":42,"name":"Ada","account":{"id":7}}),
        )
        .unwrap();
        let b = serde_json::to_vec(
            &json!({"event":"contact_updated","id":42,"name":"Ada L.","account":{"id":7}}),
        )
        .unwrap();
        let key = |raw: &[u8]| match normalize(raw, 7, now()).unwrap() {
            Normalized::Event { dedupe_key, .. } => dedupe_key,
            Normalized::Ignored(r) => panic!("{r}"),
        };
        assert_eq!(key(&a), key(&a));
        assert_ne!(key(&a), key(&b));
        assert!(key(&a).starts_with("cw:7:contact_updated:42:"));
    }

    #[test]
    fn shape_errors_are_reported_without_echoing_the_body() {
        assert!(matches!(
            normalize(b"{\"event\":\"message_cre", 7, now()),
            Err(Malformed::NotJson(_))
        ));
        assert!(matches!(
            normalize(b"[1,2]", 7, now()),
            Err(Malformed::Shape(_))
        ));
        assert!(matches!(
            normalize(br#"{"event":5}"#, 7, now()),
            Err(Malformed::Shape(_))
        ));
        let e = normalize(b"{\"secret\": \"hunter2", 7, now()).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(matches!(
            normalize(br#"{"event":"conversation_typing_on"}"#, 7, now()),
            Ok(Normalized::Ignored(_))
        ));
    }
}
