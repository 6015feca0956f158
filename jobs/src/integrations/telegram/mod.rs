//! The Telegram lead bot: Bot API updates → lead changes (`lead_score` jobs).
//!
//! The contract ([`docs/contracts/telegram.md`](../../../../docs/contracts/telegram.md), Bot API
//! 10.1): one Update per request, with
//! exactly one of 26 optional kinds, more to come (unknown kinds are answered 200 and
//! ignored); `update_id` is for deduplication only; user ids need 52 bits (`i64`);
//! `MessageEntity` offsets count UTF-16 code units; a shared contact is the user's own only if
//! `contact.user_id == from.id`; `callback_data` is 1-64 bytes, and the user's client shows a
//! spinner until `answerCallbackQuery` is called, which the webhook reply itself can do.
//!
//! What the bot's updates mean for a lead (`tg-<user id>`):
//! - `/start <payload>`: the campaign that brought the user (first one kept);
//! - a text answer: email and phone entities fill the contact fields; any other text answers
//!   the next open questionnaire question;
//! - an inline-keyboard answer, `callback_data` = `<question>=<value>`: that question;
//! - a shared contact (the user's own): the phone, normalised to E.164.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::lead::scoring::QUESTIONNAIRE;
use crate::lead::LeadInput;

/// What the endpoint makes of an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    /// Enqueue a `lead_score` job with this change, deduplicated on `update_id`.
    Lead {
        /// The update id.
        update_id: i64,
        /// The change (`email`/`phone` in clear: seal before enqueueing).
        lead: Box<LeadInput>,
        /// For a callback query: its id, to be answered in the webhook reply.
        callback_query_id: Option<String>,
    },
    /// Nothing to do (an unknown update kind, another command, somebody else's contact…).
    Ignored {
        /// The update id, when there is one.
        update_id: Option<i64>,
        /// Why, for the logs.
        why: &'static str,
        /// For a callback query: its id (answered even when ignored).
        callback_query_id: Option<String>,
    },
}

/// An update that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not JSON (or not UTF-8).
    #[error("body is not JSON")]
    NotJson,
    /// JSON of the wrong shape.
    #[error("{0}")]
    Shape(&'static str),
    /// A string PostgreSQL cannot store (NUL), at this JSON path.
    #[error("NUL character at {0}")]
    Unstorable(String),
}

/// The substring of `text` at UTF-16 `offset`/`length`, as Telegram counts entities.
pub fn utf16_slice(text: &str, offset: usize, length: usize) -> Option<String> {
    let units: Vec<u16> = text.encode_utf16().collect();
    let end = offset.checked_add(length)?;
    String::from_utf16(units.get(offset..end)?).ok()
}

/// A phone number in E.164 (`+` and 8-15 digits), from what a Telegram client sends (with or
/// without the `+`, sometimes with spaces).
pub fn e164(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let clean = raw
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    (clean && (8..=15).contains(&digits.len()) && !digits.starts_with('0'))
        .then(|| format!("+{digits}"))
}

fn name_of(user: &Value) -> Option<String> {
    let first = user.get("first_name").and_then(Value::as_str).unwrap_or("");
    let last = user.get("last_name").and_then(Value::as_str).unwrap_or("");
    let full = format!("{first} {last}").trim().to_owned();
    (!full.is_empty()).then_some(full)
}

fn blank(user: &Value) -> Option<LeadInput> {
    let id = user.get("id")?.as_i64()?;
    if user.get("is_bot").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    Some(LeadInput {
        external_id: format!("tg-{id}"),
        source: "telegram".into(),
        name: name_of(user),
        username: user
            .get("username")
            .and_then(Value::as_str)
            .map(str::to_owned),
        phone: None,
        email: None,
        answers: BTreeMap::new(),
        campaign: None,
        next_answer: None,
    })
}

fn valid_campaign(p: &str) -> bool {
    (1..=64).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn from_message(msg: &Value) -> Result<Option<LeadInput>, &'static str> {
    let from = msg.get("from").ok_or("message without a sender")?;
    let Some(mut lead) = blank(from) else {
        return Err("message from a bot or without a user id");
    };
    if let Some(contact) = msg.get("contact") {
        // Only the user's own number: a user can share somebody else's card.
        let own = contact.get("user_id").and_then(Value::as_i64)
            == from.get("id").and_then(Value::as_i64);
        if !own {
            return Err("a contact that is not the sender's own");
        }
        let phone = contact
            .get("phone_number")
            .and_then(Value::as_str)
            .and_then(e164)
            .ok_or("a contact without a usable phone number")?;
        lead.phone = Some(phone);
        return Ok(Some(lead));
    }
    let Some(text) = msg.get("text").and_then(Value::as_str) else {
        return Err("a message without text or contact");
    };
    if let Some(rest) = text.strip_prefix("/start") {
        // `/start`, `/start payload`, `/start@bot payload`.
        let rest = rest.split_once(' ').map_or("", |(_, p)| p).trim();
        if valid_campaign(rest) {
            lead.campaign = Some(rest.to_owned());
        }
        return Ok(Some(lead));
    }
    if text.starts_with('/') {
        return Err("a command the lead bot does not handle");
    }
    let mut found_contact = false;
    for e in msg
        .get("entities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(kind), Some(offset), Some(length)) = (
            e.get("type").and_then(Value::as_str),
            e.get("offset").and_then(Value::as_u64),
            e.get("length").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let Some(value) = utf16_slice(text, offset as usize, length as usize) else {
            continue;
        };
        match kind {
            "email" => {
                lead.email = Some(value);
                found_contact = true;
            }
            "phone_number" => {
                if let Some(p) = e164(&value) {
                    lead.phone = Some(p);
                    found_contact = true;
                }
            }
            _ => {}
        }
    }
    if !found_contact {
        let answer = text.trim();
        if answer.is_empty() {
            return Err("an empty text");
        }
        lead.next_answer = Some(answer.to_owned());
    }
    Ok(Some(lead))
}

fn from_callback(cb: &Value) -> Result<LeadInput, &'static str> {
    let from = cb.get("from").ok_or("callback without a sender")?;
    let mut lead = blank(from).ok_or("callback from a bot or without a user id")?;
    let data = cb
        .get("data")
        .and_then(Value::as_str)
        .ok_or("callback without data")?;
    let (question, value) = data
        .split_once('=')
        .ok_or("callback data is not question=value")?;
    if !QUESTIONNAIRE.contains(&question) || value.trim().is_empty() {
        return Err("callback for a question the bot does not ask");
    }
    lead.answers
        .insert(question.to_owned(), value.trim().to_owned());
    Ok(lead)
}

/// Body bytes → what to do. Types are checked where the bot relies on them; anything else of
/// the 26 update kinds is [`Normalized::Ignored`].
pub fn normalize(raw: &[u8]) -> Result<Normalized, Malformed> {
    let update: Value = serde_json::from_slice(raw).map_err(|_| Malformed::NotJson)?;
    if let Some(path) = leadq_platform::db::unstorable_path(&update) {
        return Err(Malformed::Unstorable(path));
    }
    let update_id = update
        .get("update_id")
        .and_then(Value::as_i64)
        .ok_or(Malformed::Shape("update_id is missing or not an integer"))?;
    let ignored = |why, callback_query_id| Normalized::Ignored {
        update_id: Some(update_id),
        why,
        callback_query_id,
    };
    if let Some(msg) = update.get("message") {
        if !msg.is_object() {
            return Err(Malformed::Shape("message is not an object"));
        }
        return Ok(match from_message(msg) {
            Ok(Some(lead)) => Normalized::Lead {
                update_id,
                lead: Box::new(lead),
                callback_query_id: None,
            },
            Ok(None) => ignored("nothing for the lead", None),
            Err(why) => ignored(why, None),
        });
    }
    if let Some(cb) = update.get("callback_query") {
        let id = cb
            .get("id")
            .and_then(Value::as_str)
            .ok_or(Malformed::Shape(
                "callback_query.id is missing or not a string",
            ))?
            .to_owned();
        return Ok(match from_callback(cb) {
            Ok(lead) => Normalized::Lead {
                update_id,
                lead: Box::new(lead),
                callback_query_id: Some(id),
            },
            Err(why) => ignored(why, Some(id)),
        });
    }
    Ok(ignored("update kind not handled", None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm(v: Value) -> Normalized {
        normalize(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn lead(n: Normalized) -> LeadInput {
        match n {
            Normalized::Lead { lead, .. } => *lead,
            Normalized::Ignored { why, .. } => panic!("ignored: {why}"),
        }
    }

    const FROM: &str = r#"{"id": 4503599627370495, "is_bot": false, "first_name": "Ada", "last_name": "L", "username": "ada"}"#;

    fn from() -> Value {
        serde_json::from_str(FROM).unwrap()
    }

    #[test]
    fn entity_offsets_count_utf16_units() {
        // 🚚 is two UTF-16 units: the email starts at unit 48, which is character 47.
        let text = "We ship 🚚 every week. Please reply to my mail: ada@example.com";
        let start = text.encode_utf16().count() - "ada@example.com".len();
        assert_eq!(start, 48);
        assert_eq!(text.chars().count() - "ada@example.com".len(), 47);
        assert_eq!(
            utf16_slice(text, 48, 15).as_deref(),
            Some("ada@example.com")
        );
        assert_eq!(utf16_slice(text, 60, 15), None);
        let l = lead(norm(
            json!({"update_id": 2, "message": {"message_id": 5, "from": from(),
            "chat": {"id": 4503599627370495i64, "type": "private"}, "date": 1780000000, "text": text,
            "entities": [{"type": "email", "offset": 48, "length": 15}]}}),
        ));
        assert_eq!(l.email.as_deref(), Some("ada@example.com"));
        assert_eq!(l.next_answer, None);
        assert_eq!(l.external_id, "tg-4503599627370495");
    }

    #[test]
    fn start_payload_text_answers_callbacks_and_own_contacts_change_the_lead() {
        let msg = |extra: Value| {
            let mut m = json!({"message_id": 1, "from": from(), "chat": {"id": 1, "type": "private"}, "date": 1});
            m.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"update_id": 10, "message": m})
        };
        assert_eq!(
            lead(norm(msg(json!({"text": "/start spring_promo"}))))
                .campaign
                .as_deref(),
            Some("spring_promo")
        );
        assert_eq!(lead(norm(msg(json!({"text": "/start"})))).campaign, None);
        assert_eq!(
            lead(norm(msg(json!({"text": "about 20k"}))))
                .next_answer
                .as_deref(),
            Some("about 20k")
        );
        let own = lead(norm(msg(
            json!({"contact": {"phone_number": "44 7700 900123", "first_name": "Ada", "user_id": 4503599627370495i64}}),
        )));
        assert_eq!(own.phone.as_deref(), Some("+447700900123"));
        assert!(matches!(
            norm(msg(
                json!({"contact": {"phone_number": "+447700900999", "first_name": "Bob", "user_id": 7}})
            )),
            Normalized::Ignored { .. }
        ));
        assert!(matches!(
            norm(msg(json!({"text": "/help"}))),
            Normalized::Ignored { .. }
        ));
        let cb = norm(
            json!({"update_id": 11, "callback_query": {"id": "4382bfdwdsb323b2d9", "from": from(),
            "chat_instance": "-5395823", "data": "budget=50k+"}}),
        );
        let Normalized::Lead {
            lead,
            callback_query_id,
            ..
        } = cb
        else {
            panic!()
        };
        assert_eq!(lead.answers["budget"], "50k+");
        assert_eq!(callback_query_id.as_deref(), Some("4382bfdwdsb323b2d9"));
    }

    #[test]
    fn unknown_kinds_are_ignored_and_broken_updates_are_malformed() {
        assert!(matches!(
            norm(json!({"update_id": 3, "message_reaction_count": {"chat": {"id": 1}}})),
            Normalized::Ignored {
                update_id: Some(3),
                ..
            }
        ));
        assert_eq!(
            normalize(b"{\"update_id\": 3, \"mess"),
            Err(Malformed::NotJson)
        );
        assert!(matches!(
            normalize(br#"{"update_id": "3"}"#),
            Err(Malformed::Shape(_))
        ));
        assert!(matches!(
            normalize(br#"{"update_id": 3, "message": []}"#),
            Err(Malformed::Shape(_))
        ));
        assert_eq!(normalize(b"\xff\xfe"), Err(Malformed::NotJson));
    }

    #[test]
    fn phones_normalise_to_e164() {
        assert_eq!(e164("+44 7700 900123").as_deref(), Some("+447700900123"));
        assert_eq!(e164("447700900123").as_deref(), Some("+447700900123"));
        assert_eq!(e164("12345"), None);
        assert_eq!(e164("call me"), None);
    }
}
