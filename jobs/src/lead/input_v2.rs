//! Version 2 of the `lead_score` payload, and the enum of the versions workers read.
//!
//! Version 1 carries answers as strings, so it cannot say "yes/no" as such, and it has no
//! place for consent evidence. Version 2 adds both: answers typed as JSON (string, number,
//! boolean) and an optional `consent` block. Workers read 1 and 2 ([`LeadPayload`]); the API
//! writes 2 only for a body that carries a boolean answer or consent, and 1 otherwise (README,
//! "Payload versions"), so workers always upgrade first.
//!
//! Everything after decoding works on the version 1 shape: [`LeadInputV2::into_v1`] turns
//! typed answers into the text version 1 stores (the one rule, [`Answer::to_v1_text`], that the
//! API has always applied to typed answers), so equivalent content stores and scores the same
//! whichever version carried it. Consent is not part of the lead: the handler records it as an
//! audit entry (`lead.consent`), tamper-evident like the rest of the trail.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadq_queue::payload::{Payload, PayloadError};
use serde::{Deserialize, Serialize};

use crate::lead::{FieldError, LeadInput};

/// A `lead_score` payload of a version this build reads.
#[derive(Debug, Clone, PartialEq)]
pub enum LeadPayload {
    /// `schema_version` 1: answers as strings.
    V1(LeadInput),
    /// `schema_version` 2: typed answers, consent.
    V2(LeadInputV2),
}

impl Payload for LeadPayload {
    fn from_versioned(version: u32, payload: serde_json::Value) -> Result<Self, PayloadError> {
        Ok(match version {
            1 => Self::V1(serde_json::from_value(payload)?),
            2 => Self::V2(serde_json::from_value(payload)?),
            v => return Err(PayloadError::Unsupported(v)),
        })
    }
}

impl LeadPayload {
    /// The change in the version 1 shape, and the consent it carries (version 2 only).
    pub fn into_v1(self) -> (LeadInput, Option<Consent>) {
        match self {
            Self::V1(lead) => (lead, None),
            Self::V2(lead) => lead.into_v1(),
        }
    }
}

/// A lead as a version 2 producer sends it: [`LeadInput`] with typed answers and consent.
/// `email` and `phone` are sealed in the queue, as in version 1 ([`crate::pii`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeadInputV2 {
    /// See [`LeadInput::external_id`].
    pub external_id: String,
    /// See [`LeadInput::source`].
    pub source: String,
    /// See [`LeadInput::name`].
    #[serde(default)]
    pub name: Option<String>,
    /// See [`LeadInput::username`].
    #[serde(default)]
    pub username: Option<String>,
    /// See [`LeadInput::phone`].
    #[serde(default)]
    pub phone: Option<String>,
    /// See [`LeadInput::email`].
    #[serde(default)]
    pub email: Option<String>,
    /// Questionnaire answers, typed; the same limits as version 1 once in text.
    #[serde(default)]
    pub answers: BTreeMap<String, Answer>,
    /// See [`LeadInput::campaign`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// See [`LeadInput::next_answer`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_answer: Option<String>,
    /// What the person agreed to, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
}

impl LeadInputV2 {
    /// The change in the version 1 shape (answers in text), and its consent.
    pub fn into_v1(self) -> (LeadInput, Option<Consent>) {
        let lead = LeadInput {
            external_id: self.external_id,
            source: self.source,
            name: self.name,
            username: self.username,
            phone: self.phone,
            email: self.email,
            answers: self
                .answers
                .into_iter()
                .map(|(k, v)| (k, v.to_v1_text()))
                .collect(),
            campaign: self.campaign,
            next_answer: self.next_answer,
        };
        (lead, self.consent)
    }
}

/// A questionnaire answer: text, a number or a yes/no; nothing else.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Answer {
    /// Text (at most 2,000 characters, checked as [`LeadInput::answers`]).
    Text(String),
    /// A number.
    Number(serde_json::Number),
    /// A yes/no answer.
    Flag(bool),
}

impl Answer {
    /// The text version 1 stores: text as given, a number in its canonical decimal form
    /// (`20000`, `2.5`), a yes/no as `true` / `false` (what a boolean answer to the API has
    /// always been stored as; no scoring rule reads it as anything but text).
    pub fn to_v1_text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
            Self::Flag(b) => b.to_string(),
        }
    }

    /// A yes/no: content only version 2 carries as such.
    pub fn is_flag(&self) -> bool {
        matches!(self, Self::Flag(_))
    }
}

/// Consent evidence: no personal data, only what was agreed to, when, under which text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Consent {
    /// The person agreed to marketing messages.
    pub marketing: bool,
    /// When they agreed (RFC 3339).
    #[serde(with = "rfc3339")]
    pub given_at: DateTime<Utc>,
    /// The version of the consent text they saw: 1-64 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_version: Option<String>,
}

const MAX_TEXT_VERSION: usize = 64;

fn error(field: &str, code: &'static str) -> FieldError {
    FieldError {
        field: field.into(),
        code,
    }
}

impl Consent {
    /// Reads a `consent` block as a producer sent it, with a field-level code for every
    /// problem (`consent`, `consent.marketing`, `consent.given_at`, `consent.text_version`).
    pub fn parse(value: &serde_json::Value) -> Result<Self, Vec<FieldError>> {
        let Some(obj) = value.as_object() else {
            return Err(vec![error("consent", "invalid_format")]);
        };
        let mut errs = Vec::new();
        let marketing = match obj.get("marketing") {
            None | Some(serde_json::Value::Null) => {
                errs.push(error("consent.marketing", "required"));
                None
            }
            Some(v) => v.as_bool().or_else(|| {
                errs.push(error("consent.marketing", "invalid_format"));
                None
            }),
        };
        let given_at = match obj.get("given_at") {
            None | Some(serde_json::Value::Null) => {
                errs.push(error("consent.given_at", "required"));
                None
            }
            Some(v) => v.as_str().and_then(rfc3339::parse).or_else(|| {
                errs.push(error("consent.given_at", "invalid_format"));
                None
            }),
        };
        let text_version = match obj.get("text_version") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errs.push(error("consent.text_version", "invalid_format"));
                None
            }
        };
        match (marketing, given_at) {
            (Some(marketing), Some(given_at)) if errs.is_empty() => {
                let consent = Self {
                    marketing,
                    given_at,
                    text_version,
                };
                let errs = consent.validate();
                if errs.is_empty() {
                    Ok(consent)
                } else {
                    Err(errs)
                }
            }
            _ => Err(errs),
        }
    }

    /// Every problem with the block, empty when it is valid (the handler checks again).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(t) = &self.text_version {
            if t.chars().count() > MAX_TEXT_VERSION {
                errs.push(error("consent.text_version", "too_long"));
            } else if t.is_empty() || t.chars().any(char::is_control) {
                errs.push(error("consent.text_version", "invalid_format"));
            }
        }
        errs
    }
}

/// `given_at` as RFC 3339, checked the same way by the API and the handler (chrono's `FromStr`
/// takes forms RFC 3339 does not).
mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn parse(s: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom("given_at is not an RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(r: Result<Consent, Vec<FieldError>>) -> Vec<(String, &'static str)> {
        r.unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    }

    #[test]
    fn a_v2_lead_normalizes_to_the_v1_lead_the_api_always_made_of_typed_answers() {
        let v2: LeadInputV2 = serde_json::from_value(json!({
            "external_id": "tg-1", "source": "telegram", "email": "sealed",
            "answers": {"decision_maker": true, "budget": 20000, "ratio": 2.5,
                        "trial": false, "need": "A CRM"},
            "consent": {"marketing": true, "given_at": "2026-01-02T03:04:05+01:00",
                        "text_version": "v3"},
        }))
        .unwrap();
        let (v1, consent) = v2.into_v1();
        let expected: LeadInput = serde_json::from_value(json!({
            "external_id": "tg-1", "source": "telegram", "email": "sealed",
            "answers": {"decision_maker": "true", "budget": "20000", "ratio": "2.5",
                        "trial": "false", "need": "A CRM"},
        }))
        .unwrap();
        assert_eq!(v1, expected);
        let consent = consent.unwrap();
        assert!(consent.marketing);
        assert_eq!(
            serde_json::to_value(&consent).unwrap()["given_at"],
            "2026-01-02T02:04:05Z"
        );
        assert_eq!(consent.text_version.as_deref(), Some("v3"));
    }

    #[test]
    fn the_payload_reads_versions_1_and_2_and_refuses_others() {
        let lead = json!({"external_id": "tg-1", "source": "telegram",
                          "answers": {"budget": "20000"}});
        assert!(matches!(
            LeadPayload::from_versioned(1, lead.clone()),
            Ok(LeadPayload::V1(_))
        ));
        assert!(matches!(
            LeadPayload::from_versioned(2, lead.clone()),
            Ok(LeadPayload::V2(_))
        ));
        for v in [0, 3] {
            let e = LeadPayload::from_versioned(v, lead.clone()).unwrap_err();
            assert_eq!(e.reason(), "unsupported_version");
        }
        // Version 1 answers are strings; v2 ones typed, but never null, lists or objects.
        let typed = json!({"external_id": "x", "source": "web", "answers": {"a": true}});
        assert_eq!(
            LeadPayload::from_versioned(1, typed).unwrap_err().reason(),
            "malformed_payload"
        );
        let nested = json!({"external_id": "x", "source": "web", "answers": {"a": [1]}});
        assert_eq!(
            LeadPayload::from_versioned(2, nested).unwrap_err().reason(),
            "malformed_payload"
        );
        let no_offset = json!({"external_id": "x", "source": "web",
            "consent": {"marketing": true, "given_at": "2026-01-02T03:04:05"}});
        assert_eq!(
            LeadPayload::from_versioned(2, no_offset)
                .unwrap_err()
                .reason(),
            "malformed_payload"
        );
    }

    #[test]
    fn a_bad_consent_block_gets_a_code_per_field() {
        assert_eq!(
            codes(Consent::parse(&json!("yes"))),
            vec![("consent".into(), "invalid_format")]
        );
        assert_eq!(
            codes(Consent::parse(&json!({}))),
            vec![
                ("consent.marketing".into(), "required"),
                ("consent.given_at".into(), "required")
            ]
        );
        assert_eq!(
            codes(Consent::parse(&json!({
                "marketing": "yes", "given_at": "yesterday", "text_version": 3
            }))),
            vec![
                ("consent.marketing".into(), "invalid_format"),
                ("consent.given_at".into(), "invalid_format"),
                ("consent.text_version".into(), "invalid_format")
            ]
        );
        assert_eq!(
            codes(Consent::parse(&json!({
                "marketing": false, "given_at": "2026-01-02T03:04:05Z",
                "text_version": "x".repeat(65)
            }))),
            vec![("consent.text_version".into(), "too_long")]
        );
        let ok = Consent::parse(&json!({"marketing": false, "given_at": "2026-01-02T03:04:05Z"}));
        assert_eq!(ok.unwrap().text_version, None);
    }
}
