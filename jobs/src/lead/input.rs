//! A lead change as producers send it: the `lead_score` payload of version 1 (what version 2
//! normalizes to, `input_v2.rs`) and the change every other lead-changing job makes, and its validation (the API answers 422 with these field codes;
//! handlers validate again, since the queue is not a trust boundary).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A lead as a producer sends it. Also the `lead_score` payload of version 1, where `email` and
/// `phone` are sealed ([`crate::pii`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeadInput {
    /// The producer's id of the lead (e.g. `tg-<telegram user id>`), unique per tenant.
    pub external_id: String,
    /// Where the lead came from (`telegram`, `chatwoot`, `web`, …).
    pub source: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Messenger user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Questionnaire answers: `budget`, `timeline`, `company_size`, `need`, and any others.
    #[serde(default)]
    pub answers: BTreeMap<String, String>,
    /// The campaign that brought the lead (e.g. the Telegram `/start` payload). The first one
    /// recorded is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// A free-text answer to whichever questionnaire question is still open
    /// ([`crate::lead::scoring::QUESTIONNAIRE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_answer: Option<String>,
}

/// One problem with a submitted lead.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// The offending field (`answers.budget` for nested ones).
    pub field: String,
    /// Stable code: `required`, `too_long`, `invalid_format`, `too_many`.
    pub code: &'static str,
}

const MAX_ANSWERS: usize = 50;

/// A free-text field: at most `max` characters, and none PostgreSQL cannot store (NUL). The
/// API refuses NUL before this runs (`unsupported_character`); the handler checks again, as the
/// queue is not a trust boundary, so such a job is refused as invalid rather than failing in
/// the database.
fn check_text(errs: &mut Vec<FieldError>, field: &str, v: &str, max: usize) {
    let code = if v.chars().count() > max {
        "too_long"
    } else if v.contains('\0') {
        "invalid_character"
    } else {
        return;
    };
    errs.push(FieldError {
        field: field.into(),
        code,
    });
}

/// Whether `e` looks like an email address (what a lead's `email` must be).
pub fn plausible_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

/// Whether `p` looks like a phone number: 7-15 digits with separators.
pub fn plausible_phone(p: &str) -> bool {
    let digits = p.chars().filter(|c| c.is_ascii_digit()).count();
    (7..=15).contains(&digits)
        && p.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
}

impl LeadInput {
    /// Every problem with the lead, empty when it is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.external_id.trim().is_empty() {
            errs.push(FieldError {
                field: "external_id".into(),
                code: "required",
            });
        } else if !leadq_queue::envelope::valid_id(&self.external_id) {
            errs.push(FieldError {
                field: "external_id".into(),
                code: "invalid_format",
            });
        }
        if self.source.trim().is_empty() {
            errs.push(FieldError {
                field: "source".into(),
                code: "required",
            });
        } else if self.source.len() > 32
            || !self
                .source
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            errs.push(FieldError {
                field: "source".into(),
                code: "invalid_format",
            });
        }
        if let Some(n) = &self.name {
            check_text(&mut errs, "name", n, 200);
        }
        if let Some(u) = &self.username {
            check_text(&mut errs, "username", u, 64);
        }
        if let Some(e) = &self.email {
            if e.len() > 254 || !plausible_email(e) {
                errs.push(FieldError {
                    field: "email".into(),
                    code: "invalid_format",
                });
            }
        }
        if let Some(p) = &self.phone {
            if !plausible_phone(p) {
                errs.push(FieldError {
                    field: "phone".into(),
                    code: "invalid_format",
                });
            }
        }
        if self.answers.len() > MAX_ANSWERS {
            errs.push(FieldError {
                field: "answers".into(),
                code: "too_many",
            });
        }
        for (k, v) in &self.answers {
            if k.is_empty() {
                errs.push(FieldError {
                    field: "answers".into(),
                    code: "invalid_format",
                });
            }
            check_text(&mut errs, "answers", k, 64);
            // The field names its answer only by a key of the allowed length: an error body
            // never echoes a long key back.
            let field = if k.chars().count() <= 64 {
                format!("answers.{k}")
            } else {
                "answers".to_owned()
            };
            check_text(&mut errs, &field, v, 2000);
        }
        if let Some(c) = &self.campaign {
            // Characters, as documented (the contract's maxLength counts characters too).
            if c.is_empty() || c.chars().count() > 64 || c.chars().any(char::is_control) {
                errs.push(FieldError {
                    field: "campaign".into(),
                    code: "invalid_format",
                });
            }
        }
        if let Some(t) = &self.next_answer {
            check_text(&mut errs, "next_answer", t, 2000);
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(answers: &[(&str, &str)], email: Option<&str>) -> LeadInput {
        LeadInput {
            external_id: "tg-1".into(),
            source: "telegram".into(),
            name: Some("Ada".into()),
            username: None,
            phone: None,
            email: email.map(Into::into),
            answers: answers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            campaign: None,
            next_answer: None,
        }
    }

    #[test]
    fn validation_reports_every_bad_field_with_a_code() {
        let mut l = lead(&[], Some("not-an-email"));
        l.external_id = String::new();
        l.source = "Tele gram".into();
        l.phone = Some("12".into());
        let errs = l.validate();
        let got: Vec<_> = errs.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            got,
            vec![
                ("external_id", "required"),
                ("source", "invalid_format"),
                ("email", "invalid_format"),
                ("phone", "invalid_format"),
            ]
        );
        assert!(lead(&[], Some("a@b.co")).validate().is_empty());
    }

    /// `field:code` of each problem `l` has, in order.
    fn problems(l: &LeadInput) -> Vec<String> {
        l.validate()
            .into_iter()
            .map(|e| format!("{}:{}", e.field, e.code))
            .collect()
    }

    #[test]
    fn nul_in_free_text_is_refused_by_the_handlers_check_too() {
        let mut l = lead(&[("need", "a\0b")], None);
        l.name = Some("Ada\0".into());
        l.next_answer = Some("\0".into());
        assert_eq!(
            problems(&l),
            [
                "name:invalid_character",
                "answers.need:invalid_character",
                "next_answer:invalid_character",
            ]
        );
    }

    #[test]
    fn an_answers_field_names_a_long_key_by_the_map_only() {
        let long_key = "k".repeat(1000);
        let long_value = "v".repeat(2001);
        let l = lead(&[(&long_key, &long_value), ("budget", &long_value)], None);
        assert_eq!(
            problems(&l),
            [
                "answers.budget:too_long",
                "answers:too_long",
                "answers:too_long",
            ]
        );
    }
}
