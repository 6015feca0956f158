//! Fingerprints: which alerts are "the same error".
//!
//! The same error from fifty workers, for fifty tenants, about fifty job ids, is one problem
//! and must be one alert. So the fingerprint is built from what does not vary: the error kind,
//! the code location (`file:line`, or the queue of a dead letter), and the *template* of the
//! message and of the first cause (numbers, ids, quoted values and hex strings replaced by
//! placeholders). It is a short SHA-256 prefix: safe to keep in Redis keys and messages.

use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest, Sha256};

use crate::alert::Alert;

/// UUIDs, quoted strings, long hex runs, numbers: the values that vary between occurrences.
static VARYING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(?P<uuid>\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b)",
        r#"|(?P<quoted>"[^"\n]{0,200}"|'[^'\n]{0,200}'|`[^`\n]{0,200}`)"#,
        r"|(?P<hex>\b[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*\b|\b[0-9a-f]*[a-f][0-9a-f]*[0-9][0-9a-f]*\b)",
        r"|(?P<num>\d+(?:\.\d+)?)",
    ))
    .expect("the template pattern compiles")
});

/// `job 42 of tenant "acme" failed after 3.5s` → `job <n> of tenant <q> failed after <n>s`.
pub fn template(message: &str) -> String {
    let cut: String = message.chars().take(300).collect();
    VARYING
        .replace_all(&cut, |c: &regex::Captures<'_>| {
            if c.name("uuid").is_some() {
                "<id>"
            } else if c.name("quoted").is_some() {
                "<q>"
            } else if c.name("hex").is_some_and(|m| m.as_str().len() >= 8) {
                "<hex>"
            } else if c.name("hex").is_some() {
                // A short word that happens to mix letters and digits (`v2`, `e2e`): keep it.
                return c[0].to_owned();
            } else {
                "<n>"
            }
            .to_owned()
        })
        .into_owned()
}

/// The fingerprint of `alert` (16 hex digits).
pub fn of(alert: &Alert) -> String {
    let mut h = Sha256::new();
    for part in [
        alert.kind.as_str(),
        alert.code.as_deref().unwrap_or(""),
        alert.location.as_deref().unwrap_or(""),
        &template(&alert.title),
        &template(alert.causes.first().map_or("", String::as_str)),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;

    #[test]
    fn varying_values_do_not_change_the_template() {
        assert_eq!(
            template("job 42 of tenant \"acme\" failed after 3.5s (id 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b, sha deadbeef01)"),
            "job <n> of tenant <q> failed after <n>s (id <id>, sha <hex>)"
        );
        assert_eq!(template("status e2e ok"), "status e2e ok");
    }

    #[test]
    fn the_same_error_with_other_values_has_one_fingerprint() {
        let a = |job: &str, tenant: &str| {
            Alert::new(
                Severity::NonCritical,
                "internal",
                format!("crm sync failed for job {job}"),
            )
            .at("jobs/src/crm.rs:10")
            .cause(format!("timed out after {tenant} ms"))
            .field("tenant", tenant)
        };
        assert_eq!(a("1", "10").fingerprint(), a("2", "20").fingerprint());
        let elsewhere = a("1", "10").at("jobs/src/crm.rs:99");
        assert_ne!(a("1", "10").fingerprint(), elsewhere.fingerprint());
        let other_kind = Alert {
            kind: "timeout".into(),
            ..a("1", "10")
        };
        assert_ne!(a("1", "10").fingerprint(), other_kind.fingerprint());
    }
}
