//! What people see instead of personal data: [`mask_personal`] for whole payloads (the
//! console's view of a dead letter), [`mask_email`] and [`mask_phone`] for a contact shown to
//! an operator (the console, logs): enough to tell two contacts apart on a call, not enough
//! to write to them.

use super::field;

/// Field names whose values are personal in any payload: the sealed fields and a person's
/// names. [`mask_personal`] hides them wherever they appear.
const PERSONAL_FIELDS: &[&str] = &[
    field::EMAIL,
    field::PHONE,
    field::CONTENT,
    "name",
    "first_name",
    "last_name",
    "username",
];

/// What [`mask_personal`] shows instead of a personal value.
pub const MASK: &str = "••• personal •••";

/// Hides personal data in `value` for display (the console's view of a dead letter): every
/// value under a personal field name, and every sealed value wherever it is, becomes
/// [`MASK`]. Nested objects and arrays are walked; structure and other fields are kept.
pub fn mask_personal(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if PERSONAL_FIELDS.contains(&k.as_str()) && !v.is_null() && !v.is_object() {
                    *v = serde_json::Value::String(MASK.to_owned());
                } else {
                    mask_personal(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_personal),
        serde_json::Value::String(s) if super::Sealer::is_sealed(s) => *s = MASK.to_owned(),
        _ => {}
    }
}

/// An email address with all but the first character of its local part hidden:
/// `ada@example.com` → `a***@example.com`. Anything that is not an address is fully hidden.
pub fn mask_email(email: &str) -> String {
    match email.trim().rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        _ => "***".to_owned(),
    }
}

/// A phone number with all but its international prefix sign and last two digits hidden:
/// `+44 20 7946 0000` → `+**********00`. A number of fewer than six digits is fully hidden.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return "***".to_owned();
    }
    let plus = if phone.trim_start().starts_with('+') {
        "+"
    } else {
        ""
    };
    let tail: String = digits[digits.len() - 2..].iter().collect();
    format!("{plus}{}{tail}", "*".repeat(digits.len() - 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_values_are_masked_for_display() {
        let mut v = serde_json::json!({
            "lead": {"name": "Ada", "email": "sealed:v1:k1:abc", "phone": null,
                     "answers": {"budget": "20000"}, "source": "telegram"},
            "messages": [{"content": "call me on +44 1234"}, "sealed:v1:k1:xyz"],
        });
        super::mask_personal(&mut v);
        assert_eq!(v["lead"]["name"], super::MASK);
        assert_eq!(v["lead"]["email"], super::MASK);
        assert!(v["lead"]["phone"].is_null());
        assert_eq!(v["lead"]["answers"]["budget"], "20000");
        assert_eq!(v["lead"]["source"], "telegram");
        assert_eq!(v["messages"][0]["content"], super::MASK);
        assert_eq!(v["messages"][1], super::MASK);
    }

    #[test]
    fn contacts_are_masked_to_tell_apart_not_to_reach() {
        assert_eq!(mask_email("ada@example.com"), "a***@example.com");
        assert_eq!(mask_email(" Ada.Lovelace@Example.com "), "A***@Example.com");
        assert_eq!(mask_email("not an address"), "***");
        assert_eq!(mask_email("@example.com"), "***");
        assert_eq!(mask_phone("+44 20 7946 0000"), "+**********00");
        assert_eq!(mask_phone("07700 900123"), "*********23");
        assert_eq!(mask_phone("123"), "***");
    }
}
