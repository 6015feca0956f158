//! Normalisation: a verified body in any of Chatwoot's shapes (webhook and push forms, times
//! in three encodings, `message_type` as word or number, private notes sent as `outgoing`)
//! becomes one [`EventInput`] to enqueue, deduplicated, or a reason to ignore it. Only what
//! the handler needs is kept; errors never echo the body.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Change, Contact, EventInput};

/// The largest body accepted (a genuine maximal message is about 2.7 MB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

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
    /// A field the handler reads has a JSON type Chatwoot never sends there (the JSON path).
    #[error("field {0} has the wrong type")]
    Field(&'static str),
    /// A string PostgreSQL cannot store (NUL), at this JSON path.
    #[error("NUL character at {0}")]
    Unstorable(String),
}

/// The JSON types Chatwoot sends at each path the handler reads. The documented tolerances are
/// the only ones: `message_type` as word or number, times in three encodings; an id as a string
/// or a flag as `"false"` is refused, never coerced.
#[derive(Clone, Copy)]
enum Want {
    /// An integer number.
    Int,
    /// A string.
    Str,
    /// A boolean.
    Bool,
    /// A string or an integer (`message_type`).
    StrOrInt,
    /// A time: a string, or an integer or float number.
    Time,
}

const TYPED: [(&str, Want); 20] = [
    ("/event", Want::Str),
    ("/id", Want::Int),
    ("/account/id", Want::Int),
    ("/content", Want::Str),
    ("/private", Want::Bool),
    ("/message_type", Want::StrOrInt),
    ("/created_at", Want::Time),
    ("/updated_at", Want::Time),
    ("/timestamp", Want::Time),
    ("/status", Want::Str),
    ("/sender/id", Want::Int),
    ("/sender/type", Want::Str),
    ("/sender/name", Want::Str),
    ("/sender/email", Want::Str),
    ("/sender/phone_number", Want::Str),
    ("/conversation/id", Want::Int),
    ("/conversation/meta/sender/id", Want::Int),
    ("/conversation/meta/sender/email", Want::Str),
    ("/meta/sender/id", Want::Int),
    ("/meta/sender/email", Want::Str),
];

/// The first typed path of `body` whose value has a type Chatwoot never sends there. `null`
/// and an absent field are left to the checks that need the field.
fn mistyped(body: &Value) -> Option<&'static str> {
    TYPED.iter().find_map(|(path, want)| {
        let v = body.pointer(path).filter(|v| !v.is_null())?;
        let ok = match want {
            Want::Int => v.as_i64().is_some(),
            Want::Str => v.is_string(),
            Want::Bool => v.is_boolean(),
            Want::StrOrInt => v.is_string() || v.as_i64().is_some(),
            Want::Time => v.is_string() || v.is_number(),
        };
        (!ok).then_some(*path)
    })
}

/// An integer sent as a number or as a numeric string.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A time in any of Chatwoot's three encodings: ISO-8601 string, integer or float Unix seconds;
/// `None` outside 1970 to about 5138 ([`MAX_UNIX_SECS`]), as for a field that is not a time, so
/// a time PostgreSQL cannot store never reaches a job (it would fail there, retried to a dead
/// letter) and a far-future one never skews reply times.
pub fn time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| (0..MAX_UNIX_SECS).contains(&t.timestamp()))
            .or_else(|| s.trim().parse::<f64>().ok().and_then(float_time)),
        Value::Number(n) => n
            .as_i64()
            .filter(|s| (0..MAX_UNIX_SECS).contains(s))
            .and_then(|s| Utc.timestamp_opt(s, 0).single())
            .or_else(|| n.as_f64().and_then(float_time)),
        _ => None,
    }
}

/// Unix seconds a time of Chatwoot's must stay under (year 5138).
const MAX_UNIX_SECS: i64 = 100_000_000_000;

fn float_time(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() || !(0.0..MAX_UNIX_SECS as f64).contains(&secs) {
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

/// Whether a message is outgoing: `"outgoing"`, or `1` in push form.
fn outgoing(v: &Value) -> bool {
    match v.get("message_type") {
        Some(Value::String(s)) => s == "outgoing",
        Some(n @ Value::Number(_)) => int(n) == Some(1),
        _ => false,
    }
}

/// An outgoing, non-private message: an agent's reply (for the chat SLA) when a user (not a
/// bot, not an automation) sent it in a conversation whose contact is known; the reason to
/// ignore it otherwise. It changes nothing about the lead, so a reply without these fields is
/// ignored rather than refused.
fn agent_reply(
    body: &Value,
    id: Option<i64>,
    received_at: DateTime<Utc>,
) -> Result<(Contact, DateTime<Utc>, Change), &'static str> {
    if body.pointer("/sender/type").and_then(Value::as_str) != Some("user") {
        return Err("not an agent's message");
    }
    let conversation = body.get("conversation");
    let contact = conversation
        .and_then(|c| c.pointer("/meta/sender"))
        .and_then(contact);
    let conversation_id = conversation.and_then(|c| c.get("id")).and_then(int);
    let (Some(contact), Some(conversation_id), Some(message_id)) = (contact, conversation_id, id)
    else {
        return Err("agent reply without its conversation or contact");
    };
    let at = body.get("created_at").and_then(time).unwrap_or(received_at);
    Ok((
        contact,
        at,
        Change::Reply {
            message_id,
            conversation_id,
        },
    ))
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
    if let Some(path) = leadq_platform::db::unstorable_path(&body) {
        return Err(Malformed::Unstorable(path));
    }
    if let Some(path) = mistyped(&body) {
        return Err(Malformed::Field(path));
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
            if outgoing(&body) {
                match agent_reply(&body, id, received_at) {
                    Ok(reply) => return Ok(event_of(raw, account_id, event, reply)),
                    Err(why) => return Ok(Normalized::Ignored(why)),
                }
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
    Ok(event_of(
        raw,
        account_id,
        event,
        (contact, occurred_at, change),
    ))
}

/// The event to enqueue, with its deduplication key.
fn event_of(
    raw: &[u8],
    account_id: i64,
    event: String,
    (contact, occurred_at, change): (Contact, DateTime<Utc>, Change),
) -> Normalized {
    let object_id = match &change {
        Change::Message { message_id, .. } | Change::Reply { message_id, .. } => *message_id,
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
    Normalized::Event {
        input: Box::new(EventInput {
            event,
            account_id,
            external_id: format!("cw-{account_id}-{}", contact.id),
            contact,
            occurred_at,
            change,
        }),
        dedupe_key,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000, 0).unwrap()
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
        // Times PostgreSQL cannot store, or no chat has: as if absent (the delivery's time).
        assert_eq!(time(&json!(-300_000_000_000_i64)), None);
        assert_eq!(time(&json!(8_000_000_000_000_i64)), None);
        assert_eq!(time(&json!(i64::MIN)), None);
        assert_eq!(time(&json!(-1)), None);
        assert_eq!(time(&json!(1e300)), None);
        assert_eq!(time(&json!("9999-12-31T23:59:59Z")), None);
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
    fn an_agents_reply_ends_the_wait_and_a_bots_does_not() {
        let reply = |sender_type: &str, private: bool| {
            let mut v: Value =
                serde_json::from_slice(&message(private, json!("outgoing"))).unwrap();
            v["sender"] = json!({"id": 5, "name": "Agent", "type": sender_type});
            v["id"] = json!(902);
            normalize(&serde_json::to_vec(&v).unwrap(), 7, now())
        };
        let Ok(Normalized::Event { input, dedupe_key }) = reply("user", false) else {
            panic!("expected an event")
        };
        assert_eq!(dedupe_key, "cw:7:message_created:902");
        assert_eq!(
            input.external_id, "cw-7-42",
            "the conversation's contact, not the agent"
        );
        assert_eq!(
            input.change,
            Change::Reply {
                message_id: 902,
                conversation_id: 3
            }
        );
        assert!(matches!(
            reply("agent_bot", false),
            Ok(Normalized::Ignored(_))
        ));
        assert!(matches!(
            reply("user", true),
            Ok(Normalized::Ignored("private note"))
        ));
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
            Err(Malformed::Field("/event"))
        ));
        assert!(matches!(
            normalize(
                br#"{"event":"message_created","private":"false"}"#,
                7,
                now()
            ),
            Err(Malformed::Field("/private"))
        ));
        let nul = normalize(
            br#"{"event":"message_created","content":"a\u0000"}"#,
            7,
            now(),
        );
        assert!(matches!(nul, Err(Malformed::Unstorable(p)) if p == "/content"));
        let e = normalize(b"{\"secret\": \"hunter2", 7, now()).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(matches!(
            normalize(br#"{"event":"conversation_typing_on"}"#, 7, now()),
            Ok(Normalized::Ignored(_))
        ));
    }
}
