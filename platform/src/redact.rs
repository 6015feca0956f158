//! The scrubber: keeps secrets and personal data out of logs, Sentry events and error bodies.
//!
//! Code should never log a secret in the first place ([`crate::secret::Secret`] prints as
//! `[redacted]`), but text from outside (a header, a payload, a driver's error message) can
//! carry one. So every log line passes through [`ScrubbingStderr`], every Sentry event through
//! [`sentry_before_send`], and every echoed correlation id through [`Redactor::redact`], which
//! masks emails, phone numbers, bearer/basic tokens, leadq API keys, `password=`-style values
//! (key=value, JSON and query parameters), credentials in URLs and DSNs, AWS keys, Telegram bot
//! tokens, and any extra pattern from `LEADQ_SCRUB_PATTERNS`.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use regex::Regex;

/// Rules in the order they apply: (pattern, replacement). Replacements keep the prefix that
/// says what was there (`Bearer [redacted]`, `password=[redacted]`) so logs stay readable.
const RULES: &[(&str, &str)] = &[
    // Credentials in URLs and DSNs: scheme://user:password@host, scheme://key@host.
    (
        r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*:[^\s/@]*@",
        "${1}[redacted]@",
    ),
    (r"(?i)\b(https?://)[0-9a-f]{16,}@", "${1}[redacted]@"),
    // Authorization headers.
    (
        r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}",
        "$1 [redacted]",
    ),
    // leadq API keys.
    (r"\blq_[0-9a-fA-F]{12}_[0-9a-fA-F]{64}\b", "lq_[redacted]"),
    // key=value and key: value secrets (also query parameters).
    (
        r#"(?i)\b(password|passwd|pwd|secret|client_secret|api_key|apikey|token|access_token|refresh_token|auth|signature|sig|aws_secret_access_key|dsn)(=|:\s*)([^\s&"',;]+)"#,
        "$1$2[redacted]",
    ),
    // JSON "key": "value" secrets.
    (
        r#"(?i)("(?:password|passwd|pwd|secret|client_secret|api_key|apikey|token|access_token|refresh_token|authorization|signature|dsn|cookie)"\s*:\s*)"[^"]*""#,
        "$1\"[redacted]\"",
    ),
    // AWS access key ids.
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "[aws-key]"),
    // Telegram bot tokens.
    (r"\b\d{8,10}:[A-Za-z0-9_-]{35}\b", "[telegram-token]"),
    // Email addresses.
    (r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b", "[email]"),
    // Phone numbers: international (+ then 7-15 digits with separators), or grouped national.
    (r"\+\d[\d\s().-]{6,18}\d", "[phone]"),
    (r"\(\d{3}\)\s*\d{3}[-.\s]\d{4}\b", "[phone]"),
    (r"\b\d{3}[-.]\d{3}[-.]\d{4}\b", "[phone]"),
];

/// A compiled scrubber. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Arc<Vec<(Regex, String)>>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(&[]).expect("the built-in rules compile")
    }
}

impl Redactor {
    /// The built-in rules plus `extra` patterns (each match becomes `[redacted]`). The error
    /// names the pattern that does not compile.
    pub fn new(extra: &[String]) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (p, r) in RULES {
            rules.push((
                Regex::new(p).map_err(|e| format!("{p}: {e}"))?,
                (*r).to_owned(),
            ));
        }
        for p in extra {
            let re =
                Regex::new(p).map_err(|_| format!("scrub pattern {p:?} is not a valid regex"))?;
            rules.push((re, "[redacted]".to_owned()));
        }
        Ok(Self {
            rules: Arc::new(rules),
        })
    }

    /// Masks everything sensitive in `text`. Borrowed when nothing matched (the common case).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        for (re, replacement) in self.rules.iter() {
            if re.is_match(&out) {
                out = Cow::Owned(re.replace_all(&out, replacement.as_str()).into_owned());
            }
        }
        out
    }
}

static GLOBAL: OnceLock<Redactor> = OnceLock::new();

/// Installs the process-wide redactor (first call wins).
pub fn install(r: Redactor) {
    let _ = GLOBAL.set(r);
}

/// The process-wide redactor (built-in rules if none was installed).
pub fn global() -> &'static Redactor {
    GLOBAL.get_or_init(Redactor::default)
}

/// A `MakeWriter` for tracing-subscriber: each formatted event is scrubbed, whole, before it
/// reaches stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubbingStderr;

/// One event's bytes, scrubbed and written when dropped (tracing writes an event, then drops
/// the writer).
#[derive(Debug, Default)]
pub struct ScrubbedEvent(Vec<u8>);

impl Write for ScrubbedEvent {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedEvent {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let clean = global().redact(&text);
        let _ = std::io::stderr().lock().write_all(clean.as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbingStderr {
    type Writer = ScrubbedEvent;
    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedEvent::default()
    }
}

fn scrub_value(v: &mut sentry::protocol::Value) {
    use sentry::protocol::Value;
    match v {
        Value::String(s) => {
            if let Cow::Owned(clean) = global().redact(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_value),
        Value::Object(map) => map.values_mut().for_each(scrub_value),
        _ => {}
    }
}

fn scrub_string(s: &mut String) {
    if let Cow::Owned(clean) = global().redact(s) {
        *s = clean;
    }
}

/// Sentry's `before_send`: scrubs message, exceptions, breadcrumbs, extra, tags, contexts and
/// the request, and drops user identity beyond an id.
pub fn sentry_before_send(
    mut event: sentry::protocol::Event<'static>,
) -> Option<sentry::protocol::Event<'static>> {
    if let Some(m) = event.message.as_mut() {
        scrub_string(m);
    }
    if let Some(l) = event.logentry.as_mut() {
        scrub_string(&mut l.message);
        l.params.iter_mut().for_each(scrub_value);
    }
    for e in event.exception.values.iter_mut() {
        if let Some(v) = e.value.as_mut() {
            scrub_string(v);
        }
    }
    for b in event.breadcrumbs.values.iter_mut() {
        if let Some(m) = b.message.as_mut() {
            scrub_string(m);
        }
        b.data.values_mut().for_each(scrub_value);
    }
    event.extra.values_mut().for_each(scrub_value);
    event.tags.values_mut().for_each(scrub_string);
    for ctx in event.contexts.values_mut() {
        if let sentry::protocol::Context::Other(map) = ctx {
            map.values_mut().for_each(scrub_value);
        }
    }
    if let Some(req) = event.request.as_mut() {
        if let Some(q) = req.query_string.as_mut() {
            scrub_string(q);
        }
        if let Some(d) = req.data.as_mut() {
            scrub_string(d);
        }
        req.cookies = None;
        req.headers.clear();
    }
    if let Some(user) = event.user.as_mut() {
        user.email = None;
        user.ip_address = None;
        user.username = None;
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        Redactor::default().redact(s).into_owned()
    }

    #[test]
    fn secrets_and_personal_data_are_masked() {
        let key = format!("lq_{}_{}", "a1".repeat(6), "f0".repeat(32));
        let cases = [
            ("postgres://leadq:hunter2@db:5432/leadq", "hunter2"),
            ("redis://:hunter2@10.0.0.5:6379/0", "hunter2"),
            (
                "https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/4",
                "0123456789abcdef",
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
                "eyJhbGciOi",
            ),
            (&format!("key {key} refused"), "f0f0f0"),
            ("GET /cb?token=abc123secret&x=1", "abc123secret"),
            ("password=hunter2 user=x", "hunter2"),
            (r#"{"password":"hunter2","a":1}"#, "hunter2"),
            ("AKIAABCDEFGHIJKLMNOP is an AWS key", "AKIAABCDEFGHIJKLMNOP"),
            (
                "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0 up",
                "AAHdqTcv",
            ),
            (r#"{"email":"ada@example.com"}"#, "ada@example.com"),
            ("call +44 20 7946 0958 now", "7946"),
            ("call (555) 123-4567", "123-4567"),
        ];
        for (input, secret) in cases {
            let out = r(input);
            assert!(!out.contains(secret), "{input} -> {out}");
        }
        assert_eq!(r("Bearer abcdefghijkl"), "Bearer [redacted]");
        assert_eq!(r("password=hunter2"), "password=[redacted]");
    }

    #[test]
    fn ordinary_log_text_is_left_alone() {
        for ok in [
            r#"{"timestamp":"2026-11-23T03:27:39.272703Z","level":"WARN","message":"Job run failed.","kind":"lead_score"}"#,
            "job_id=01a20671-ec94-7581-a332-9d0618b46bad attempt=3 elapsed_ms=12.5",
            "listening on 127.0.0.1:8080",
            r#"{"t_enq":1795404459215.7004,"seq":1204}"#,
        ] {
            assert!(
                matches!(Redactor::default().redact(ok), Cow::Borrowed(_)),
                "{ok}"
            );
        }
    }

    #[test]
    fn extra_patterns_apply_and_bad_ones_are_refused() {
        let red = Redactor::new(&["ACME-\\d{6}".into()]).unwrap();
        assert_eq!(red.redact("order ACME-123456"), "order [redacted]");
        let err = Redactor::new(&["(".into()]).unwrap_err();
        assert!(err.contains("not a valid regex"));
    }

    #[test]
    fn sentry_events_are_scrubbed() {
        let mut e = sentry::protocol::Event::new();
        e.message = Some("failed for ada@example.com with password=hunter2".into());
        e.extra.insert("dsn".into(), "redis://:hunter2@h:1".into());
        let e = sentry_before_send(e).unwrap();
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("ada@example.com"),
            "{text}"
        );
    }
}
