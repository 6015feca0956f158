//! The scrubber: keeps secrets and personal data out of logs, Sentry events, Telegram alerts
//! and error bodies.
//!
//! # Why
//!
//! Our own code never formats a secret ([`crate::secret::Secret`] prints as `[redacted]`), but
//! much of what we write down comes from outside: a producer's payload echoed in a validation
//! error, a driver's error message that quotes its connection string, a header dumped by a
//! debugging line, a lead's email in a job's failure reason. Logs, Sentry and alert chats are
//! read by more people and kept longer than the database, so whatever leaves the process
//! through them passes through one scrubber first.
//!
//! # Where it is applied
//!
//! - **Logs**: [`scrubbing_stderr`] is the writer of the log layer; every formatted line is
//!   scrubbed whole, with [`global`], before it reaches stderr.
//! - **Sentry**: [`scrub_sentry_event`] is the client's `before_send` and
//!   [`scrub_sentry_breadcrumb`] its `before_breadcrumb`.
//! - **Telegram alerts and error bodies**: whoever builds the text calls
//!   `scrub::global().scrub(&text)` (or [`Scrubber::scrub_json`] on a JSON body) before
//!   sending it.
//!
//! The process installs its scrubber once at start-up with [`install`] (built-in rules plus
//! the operator's extra patterns); until then [`global`] is the built-in one.
//!
//! # What it masks
//!
//! | what | example | becomes |
//! | --- | --- | --- |
//! | credentials in URLs | `redis://:hunter2@10.0.0.5:6379/0` | `redis://:[redacted]@10.0.0.5:6379/0` |
//! | Sentry DSN keys | `https://<32 hex>@o1.ingest.sentry.io/4` | `https://[redacted]@o1.ingest.sentry.io/4` |
//! | `Authorization` schemes | `Authorization: Bearer eyJhbGciOi…` | `Authorization: Bearer [redacted]` |
//! | leadq API keys | `lq_<12 hex>_<64 hex>` | `lq_[redacted]` |
//! | secrets by key name | `password=x`, `"api_key":"x"`, `client_secret: "x"` | `password=[redacted]`, … |
//! | secret query parameters | `?token=abc&x=1`, `&sig=…`, `&key=…`, `&auth=…` | `?token=[redacted]&x=1` |
//! | AWS access key ids | `AKIAIOSFODNN7EXAMPLE` | `[aws-key]` |
//! | Telegram bot tokens | `123456789:AAH…` (35 characters) | `[telegram-token]` |
//! | email addresses | `ada@example.com` | `[email]` |
//! | phone numbers | `+7 912 345 67 89`, `(555) 123-4567`, `8 912 345-67-89` | `[phone]` |
//! | each extra pattern | whatever it matches | `[redacted]` |
//!
//! The markers are stable (see the constants below): dashboards and tests may look for them.
//! Phone numbers are found by shape, pragmatically: a leading `+`, or a typical grouping
//! (`(555) 123-4567`, `555-123-4567`, `8 912 345-67-89`, `020 7946 0958`,
//! `06 12 34 56 78`), 7 to 15 digits, not glued to other digits, letters, dots or dashes. So
//! UUIDs, RFC 3339 timestamps, IP addresses and ports, durations and bare numbers (including
//! 13-digit millisecond timestamps) stay as they are.
//!
//! # Cost
//!
//! All the rules are compiled once into one [`RegexSet`]: a line is scanned once, and when
//! nothing can match (nearly every log line) [`Scrubber::scrub`] returns the input borrowed,
//! without allocating. Only the rules that matched are then run, in order, each on the output
//! of the previous one.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, LazyLock, OnceLock};

use base64::Engine;
use regex::{Captures, Regex, RegexSet};
use sentry::protocol::{Breadcrumb, Context, Event, Stacktrace, Url, Value};
use tracing_subscriber::fmt::MakeWriter;

/// What a masked secret becomes (also the value of a JSON key that is sensitive by name).
pub const REDACTED: &str = "[redacted]";
/// What an email address becomes.
pub const EMAIL: &str = "[email]";
/// What a phone number becomes.
pub const PHONE: &str = "[phone]";
/// What an AWS access key id becomes.
pub const AWS_KEY: &str = "[aws-key]";
/// What a Telegram bot token becomes.
pub const TELEGRAM_TOKEN: &str = "[telegram-token]";
/// What a leadq API key becomes.
pub const LEADQ_KEY: &str = "lq_[redacted]";

/// Why [`Scrubber::new`] refused the extra patterns. Each variant names the pattern.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    /// The pattern is not a valid regular expression (syntax of the `regex` crate).
    #[error("scrub pattern {pattern:?} is not a valid regular expression")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What the regex compiler said.
        #[source]
        source: regex::Error,
    },
    /// The pattern matches the empty string (say `a*`): it would mask nothing useful and
    /// would stamp `[redacted]` between characters.
    #[error("scrub pattern {pattern:?} matches the empty string")]
    MatchesEmpty {
        /// The pattern as given.
        pattern: String,
    },
    /// Each pattern compiles alone but all of them together exceed the regex size limit.
    #[error("the scrub patterns together are too large to compile")]
    TooLarge {
        /// What the regex compiler said.
        #[source]
        source: regex::Error,
    },
}

/// The scrubber: built-in rules plus extra patterns, compiled once.
///
/// Cheap to clone (one `Arc`), `Send + Sync`. Use [`global`] rather than building one per call.
#[derive(Clone)]
pub struct Scrubber {
    inner: Arc<Compiled>,
}

struct Compiled {
    /// One pattern per rule, same order: which rules can match a text, in one scan.
    set: RegexSet,
    /// Built-in rules first (in the order they apply), then the extra patterns.
    rules: Vec<Rule>,
}

#[derive(Clone)]
struct Rule {
    re: Regex,
    replace: Replace,
}

/// How a rule rewrites one match.
#[derive(Clone, Copy)]
enum Replace {
    /// Every match becomes this text.
    Fixed(&'static str),
    /// The match becomes what the function returns; `None` keeps it (a candidate that turned
    /// out not to be a secret, e.g. a digit group glued to other digits).
    With(fn(&Captures<'_>, &str) -> Option<String>),
}

impl fmt::Debug for Scrubber {
    /// Never prints the patterns: an operator may have pasted a leaked literal into one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("builtin_rules", &BUILTINS.len())
            .field("extra_patterns", &(self.inner.rules.len() - BUILTINS.len()))
            .finish()
    }
}

impl Default for Scrubber {
    /// The built-in rules only (compiled once per process, then shared).
    fn default() -> Self {
        DEFAULT.clone()
    }
}

impl Scrubber {
    /// The built-in rules plus `extra_patterns` (regex syntax; each match becomes
    /// `[redacted]`, after the built-in rules ran). Blank patterns are ignored. The error names
    /// the first pattern that does not compile or that matches the empty string.
    pub fn new(extra_patterns: &[String]) -> Result<Scrubber, ScrubError> {
        let mut rules: Vec<Rule> = BUILTIN_RULES.clone();
        for pattern in extra_patterns.iter().filter(|p| !p.trim().is_empty()) {
            let re = Regex::new(pattern).map_err(|source| ScrubError::InvalidPattern {
                pattern: pattern.clone(),
                source,
            })?;
            if re.is_match("") {
                return Err(ScrubError::MatchesEmpty {
                    pattern: pattern.clone(),
                });
            }
            rules.push(Rule {
                re,
                replace: Replace::Fixed(REDACTED),
            });
        }
        let set = RegexSet::new(rules.iter().map(|r| r.re.as_str()))
            .map_err(|source| ScrubError::TooLarge { source })?;
        Ok(Scrubber {
            inner: Arc::new(Compiled { set, rules }),
        })
    }

    /// Masks every secret and every piece of personal data in `text`.
    ///
    /// Returns `Cow::Borrowed(text)` when nothing was masked, which is the common case and
    /// allocates nothing. Scrubbing is idempotent: scrubbed text scrubs to itself.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let hits = self.inner.set.matches(text);
        if !hits.matched_any() {
            return Cow::Borrowed(text);
        }
        let mut out = Cow::Borrowed(text);
        for i in hits.iter() {
            if let Some(changed) = self.inner.rules[i].apply(&out) {
                out = Cow::Owned(changed);
            }
        }
        out
    }

    /// Scrubs `s` where it stands (no allocation when nothing matched).
    pub fn scrub_in_place(&self, s: &mut String) {
        if let Cow::Owned(clean) = self.scrub(s) {
            *s = clean;
        }
    }

    /// Scrubs a JSON value where it stands: every string (at any depth) is scrubbed, and the
    /// value of every object key that is sensitive by name ([`is_sensitive_key`]: `password`,
    /// `token`, `authorization`, `x-api-key`, `set-cookie`, `email`, `phone`, `dsn`, …)
    /// becomes `"[redacted]"` whole, unless it is `null` or a boolean (nothing to hide there,
    /// and `"email_verified": true` stays useful). Object keys themselves are kept.
    pub fn scrub_json(&self, v: &mut Value) {
        match v {
            Value::String(s) => self.scrub_in_place(s),
            Value::Array(items) => items.iter_mut().for_each(|x| self.scrub_json(x)),
            Value::Object(map) => self.scrub_entries(map.iter_mut()),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Scrubs the entries of a map of JSON values: values of sensitive keys are redacted whole,
    /// the others scrubbed.
    fn scrub_entries<'m>(&self, entries: impl Iterator<Item = (&'m String, &'m mut Value)>) {
        for (key, value) in entries {
            if is_sensitive_key(key) {
                redact_value(value);
            } else {
                self.scrub_json(value);
            }
        }
    }

    /// Scrubs a map of strings (tags, headers): values of sensitive keys become `[redacted]`,
    /// the others are scrubbed.
    fn scrub_string_map<'m>(&self, entries: impl Iterator<Item = (&'m String, &'m mut String)>) {
        for (key, value) in entries {
            if is_sensitive_key(key) {
                if !value.is_empty() {
                    REDACTED.clone_into(value);
                }
            } else {
                self.scrub_in_place(value);
            }
        }
    }

    fn scrub_opt(&self, s: &mut Option<String>) {
        if let Some(s) = s.as_mut() {
            self.scrub_in_place(s);
        }
    }

    fn scrub_stacktrace(&self, st: &mut Option<Stacktrace>) {
        let Some(st) = st.as_mut() else { return };
        for frame in &mut st.frames {
            self.scrub_entries(frame.vars.iter_mut());
            self.scrub_opt(&mut frame.context_line);
            frame
                .pre_context
                .iter_mut()
                .chain(frame.post_context.iter_mut())
                .for_each(|line| self.scrub_in_place(line));
        }
    }

    /// Scrubs a Sentry breadcrumb where it stands: its message and its data.
    pub fn scrub_breadcrumb(&self, crumb: &mut Breadcrumb) {
        self.scrub_opt(&mut crumb.message);
        self.scrub_entries(crumb.data.iter_mut());
    }

    /// Scrubs a Sentry event where it stands (what [`scrub_sentry_event`] does with
    /// [`global`]).
    ///
    /// Scrubbed: the message and log entry, the culprit, exceptions (type, value, mechanism,
    /// stack frames' variables and source lines), threads' stack traces, breadcrumbs, extra,
    /// tags, the string parts of contexts (`trace`, `response` and free-form ones), and the
    /// request (URL, query string, body, headers, environment; cookies are dropped). The user
    /// keeps only its id and free-form data (scrubbed): email, IP address and username are
    /// removed. `transaction`, `server_name`, release and environment are left as they are.
    pub fn scrub_event(&self, event: &mut Event<'_>) {
        self.scrub_opt(&mut event.message);
        self.scrub_opt(&mut event.culprit);
        if let Some(entry) = event.logentry.as_mut() {
            self.scrub_in_place(&mut entry.message);
            entry.params.iter_mut().for_each(|p| self.scrub_json(p));
        }
        for exc in &mut event.exception.values {
            self.scrub_in_place(&mut exc.ty);
            self.scrub_opt(&mut exc.value);
            if let Some(mech) = exc.mechanism.as_mut() {
                self.scrub_opt(&mut mech.description);
                self.scrub_entries(mech.data.iter_mut());
            }
            self.scrub_stacktrace(&mut exc.stacktrace);
            self.scrub_stacktrace(&mut exc.raw_stacktrace);
        }
        self.scrub_stacktrace(&mut event.stacktrace);
        for thread in &mut event.threads.values {
            self.scrub_stacktrace(&mut thread.stacktrace);
            self.scrub_stacktrace(&mut thread.raw_stacktrace);
        }
        for crumb in &mut event.breadcrumbs.values {
            self.scrub_breadcrumb(crumb);
        }
        self.scrub_entries(event.extra.iter_mut());
        self.scrub_string_map(event.tags.iter_mut());
        for ctx in event.contexts.values_mut() {
            match ctx {
                Context::Other(map) => self.scrub_entries(map.iter_mut()),
                Context::Trace(trace) => {
                    self.scrub_opt(&mut trace.description);
                    self.scrub_entries(trace.data.iter_mut());
                }
                Context::Response(resp) => {
                    if resp.cookies.is_some() {
                        resp.cookies = Some(REDACTED.to_owned());
                    }
                    self.scrub_string_map(resp.headers.iter_mut());
                    if let Some(data) = resp.data.as_mut() {
                        self.scrub_json(data);
                    }
                }
                // Device, OS, runtime, app, browser, GPU: facts about the machine.
                _ => {}
            }
        }
        if let Some(req) = event.request.as_mut() {
            req.url = req.url.take().and_then(|url| self.scrub_url(url));
            if let Some(qs) = req.query_string.as_mut() {
                // Scrubbed as a query (so `sig=`/`key=` count) without the leading `?`.
                let clean = self.scrub(&format!("?{qs}")).into_owned();
                if clean[1..] != **qs {
                    *qs = clean[1..].to_owned();
                }
            }
            if let Some(body) = req.data.as_mut() {
                self.scrub_body(body);
            }
            if req.cookies.is_some() {
                req.cookies = Some(REDACTED.to_owned());
            }
            for (name, value) in req.headers.iter_mut() {
                if is_sensitive_key(name) || is_ip_header(name) {
                    REDACTED.clone_into(value);
                } else {
                    self.scrub_in_place(value);
                }
            }
            req.env
                .retain(|name, _| !name.eq_ignore_ascii_case("REMOTE_ADDR"));
            self.scrub_string_map(req.env.iter_mut());
        }
        if let Some(user) = event.user.as_mut() {
            user.email = None;
            user.ip_address = None;
            user.username = None;
            self.scrub_entries(user.other.iter_mut());
        }
    }

    /// A URL after scrubbing, or `None` when the scrubbed text is no longer a URL.
    fn scrub_url(&self, url: Url) -> Option<Url> {
        let changed = match self.scrub(url.as_str()) {
            Cow::Borrowed(_) => None,
            Cow::Owned(clean) => Some(clean),
        };
        match changed {
            None => Some(url),
            Some(clean) => Url::parse(&clean).ok(),
        }
    }

    /// A request or response body: scrubbed as JSON when it parses as JSON (so sensitive keys
    /// are redacted whole), as text otherwise.
    fn scrub_body(&self, body: &mut String) {
        if let Ok(mut json) = serde_json::from_str::<Value>(body) {
            if json.is_object() || json.is_array() {
                let before = json.clone();
                self.scrub_json(&mut json);
                if json != before {
                    *body = json.to_string();
                }
                return;
            }
        }
        self.scrub_in_place(body);
    }
}

impl Rule {
    /// The text with every accepted match replaced, or `None` when nothing changed.
    fn apply(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        let mut last = 0;
        let mut put = |start: usize, end: usize, replacement: &str| {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[last..start]);
            o.push_str(replacement);
            last = end;
        };
        match self.replace {
            Replace::Fixed(replacement) => {
                for m in self.re.find_iter(text) {
                    if !m.is_empty() && m.as_str() != replacement {
                        put(m.start(), m.end(), replacement);
                    }
                }
            }
            Replace::With(f) => {
                for caps in self.re.captures_iter(text) {
                    let Some(m) = caps.get(0) else { continue };
                    if m.is_empty() {
                        continue;
                    }
                    match f(&caps, text) {
                        Some(replacement) if replacement != m.as_str() => {
                            put(m.start(), m.end(), &replacement);
                        }
                        _ => {}
                    }
                }
            }
        }
        let mut out = out?;
        out.push_str(&text[last..]);
        Some(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The built-in rules.
// ---------------------------------------------------------------------------------------------

/// One built-in rule: what it finds and how it rewrites it. The order is the order they apply.
struct Builtin {
    pattern: &'static str,
    replace: Replace,
}

const BUILTINS: &[Builtin] = &[
    // Secrets by key name: the key *ends* with one of these words (`db_password`,
    // `webhook_secret`, `csrf_token`, `aws_secret_access_key`), case-insensitively. First, so
    // that a value is masked whole (`dsn=https://…`) before the rules below mask pieces of it.
    Builtin {
        pattern: concat!(
            r#"(?i)(?P<key>(?-u:\b)[A-Za-z0-9_\-]*?(?:"#,
            r"password|passwd|passphrase|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|authorization|cookie|dsn",
            r#"))(?P<close>\\?["']?)"#,
            // `=` or `:`, also with the ANSI colour codes of the pretty log format around it.
            r"(?P<sep>(?:\x1b\[[0-9;]*m)*[ \t]*[:=][ \t]*(?:\x1b\[[0-9;]*m)*)",
            // \"escaped\" inside a JSON string | "quoted" | 'quoted' | bare.
            r#"(?P<value>\\"(?:[^"\\]|\\[^"])*\\"|"(?:[^"\\]|\\.)*"|'[^'\r\n]*'|[^\s&,;"'<>{}\[\]()\\\x1b]+)"#,
        ),
        replace: Replace::With(key_value),
    },
    // Secret query parameters: `?token=…`, `&sig=…`, `&X-Amz-Signature=…`, `?key=…`, `&auth=…`.
    Builtin {
        pattern: r#"(?i)(?P<lead>[?&])(?P<key>[A-Za-z0-9_.\-]*?(?:signature|sig|key|auth|token|secret|password|passwd|pwd|credential))=(?P<value>[^&#\s"'<>\\\[]+)"#,
        replace: Replace::With(query_param),
    },
    // Credentials in URLs (`scheme://user:pass@host`) and Sentry DSN keys (`https://key@host`).
    // The password may hold an unescaped `@`: it runs to the last `@` before the path.
    Builtin {
        pattern: r#"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]{0,15}://)(?P<user>[^:/?#@\s"'<>\\]*)(?::(?P<pass>[^/?#\s"'<>\\]*))?@"#,
        replace: Replace::With(url_credentials),
    },
    // `Authorization: Bearer …`, `bearer …`, `Basic …`.
    Builtin {
        pattern: r#"(?i)(?P<prefix>(?-u:\b)(?:proxy-)?authorization\\?["']?[ \t]*[:=][ \t]*\\?["']?[ \t]*)?(?-u:\b)(?P<scheme>bearer|basic)[ \t]+(?P<token>[A-Za-z0-9\-._~+/]+=*)"#,
        replace: Replace::With(authorization),
    },
    // leadq API keys.
    Builtin {
        pattern: r"lq_[0-9a-fA-F]{12}_[0-9a-fA-F]{64}",
        replace: Replace::With(leadq_key),
    },
    // AWS access key ids (long-term AKIA, temporary ASIA).
    Builtin {
        pattern: r"(?:AKIA|ASIA)[A-Z0-9]{16}",
        replace: Replace::With(aws_key_id),
    },
    // Telegram bot tokens (`bot<id>:<35>` in API URLs too).
    Builtin {
        pattern: r"[0-9]{8,10}:[A-Za-z0-9_\-]{35}",
        replace: Replace::With(telegram_token),
    },
    // Email addresses.
    Builtin {
        pattern: r"[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}",
        replace: Replace::With(email),
    },
    // Phone numbers, by shape; the longest shapes first (at one position the first wins).
    Builtin {
        pattern: concat!(
            // +7 912 345 67 89, +1 (555) 123-4567, +44 20 7946 0958, +79123456789
            r"\+[0-9]{1,3}(?:[ .\-]?\([0-9]{1,5}\)|[ .\-]?[0-9]{1,5}){1,6}",
            // (555) 123-4567, 8 (912) 345-67-89, 1 (555) 123 4567
            r"|(?:[0-9]{1,3}[ .\-]?)?\([0-9]{2,5}\)[ .\-]?[0-9]{2,4}(?:[ .\-]?[0-9]{2,4}){1,3}",
            // 8 912 345-67-89, 1-555-123-4567
            r"|[0-9]{1,2}[ .\-][0-9]{3}[ .\-][0-9]{3}(?:[ .\-][0-9]{2}[ .\-][0-9]{2}|[ .\-][0-9]{4})",
            // 912 345-67-89
            r"|[0-9]{3}[ .\-][0-9]{3}[ .\-][0-9]{2}[ .\-][0-9]{2}",
            // 020 7946 0958, 01632 960 983
            r"|0[0-9]{2,4}[ \-][0-9]{3,4}[ \-][0-9]{3,4}",
            // 555-123-4567, 555.123.4567, 555 123 4567
            r"|[0-9]{3}[ .\-][0-9]{3}[ .\-][0-9]{4}",
            // 06 12 34 56 78
            r"|0[0-9](?:[ .\-][0-9]{2}){4}",
        ),
        replace: Replace::With(phone),
    },
];

static BUILTIN_RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    BUILTINS
        .iter()
        .map(|b| Rule {
            re: Regex::new(b.pattern).expect("built-in scrub patterns compile"),
            replace: b.replace,
        })
        .collect()
});

static DEFAULT: LazyLock<Scrubber> =
    LazyLock::new(|| Scrubber::new(&[]).expect("built-in scrub patterns compile"));

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether the byte at `i` is escaped, i.e. preceded by an odd number of backslashes.
fn is_escaped(bytes: &[u8], i: usize) -> bool {
    bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// Whether a token starting at `start` stands on its own on the left: at the start, after a
/// non-word byte, or right after a JSON escape such as `\n` (a log line is JSON).
fn free_before(text: &str, start: usize) -> bool {
    let bytes = text.as_bytes();
    match start.checked_sub(1).map(|i| (i, bytes[i])) {
        None => true,
        Some((_, b)) if !is_word_byte(b) => true,
        Some((i, b)) => matches!(b, b'n' | b'r' | b't') && is_escaped(bytes, i),
    }
}

/// Whether a token ending at `end` stands on its own on the right.
fn free_after(text: &str, end: usize) -> bool {
    text.as_bytes().get(end).is_none_or(|&b| !is_word_byte(b))
}

fn whole(c: &Captures<'_>) -> (usize, usize) {
    c.get(0).map_or((0, 0), |m| (m.start(), m.end()))
}

/// `password=…`, `"token":"…"`, `\"secret\":\"…\"`, `client_secret: "…"`: masks the value,
/// keeps the key, separator and quotes.
fn key_value(c: &Captures<'_>, _: &str) -> Option<String> {
    let key = &c["key"];
    let close = &c["close"];
    let sep = &c["sep"];
    let value = &c["value"];
    let (open, inner, end) = split_quotes(value);
    if inner.is_empty() || inner == REDACTED {
        return None;
    }
    if open.is_empty() {
        let lower = inner.to_ascii_lowercase();
        // JSON literals hide nothing; `authorization=Bearer x` is the next rule's.
        if matches!(
            lower.as_str(),
            "null" | "true" | "false" | "none" | "bearer" | "basic"
        ) {
            return None;
        }
        // `token: expired` in prose is not a secret; `"token": x`, `db_password: x` and
        // `password: x` are. An unquoted key with `:` and a bare value counts only when the
        // key is compound or names a password or cookie.
        if sep.contains(':') && close.is_empty() {
            let k = key.to_ascii_lowercase();
            let compound = k.contains('_') || k.contains('-');
            let strong = ["password", "passwd", "passphrase", "pwd", "cookie"]
                .iter()
                .any(|s| k.ends_with(s));
            if !compound && !strong {
                return None;
            }
        }
    }
    Some(format!("{key}{close}{sep}{open}{REDACTED}{end}"))
}

/// Splits a value into (opening quote, content, closing quote); quotes may be `\"`, `"`, `'`
/// or nothing.
fn split_quotes(value: &str) -> (&str, &str, &str) {
    for q in ["\\\"", "\"", "'"] {
        if value.len() >= 2 * q.len() && value.starts_with(q) && value.ends_with(q) {
            return (q, &value[q.len()..value.len() - q.len()], q);
        }
    }
    ("", value, "")
}

fn query_param(c: &Captures<'_>, _: &str) -> Option<String> {
    Some(format!("{}{}={REDACTED}", &c["lead"], &c["key"]))
}

fn is_sentry_key(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn url_credentials(c: &Captures<'_>, _: &str) -> Option<String> {
    let scheme = &c["scheme"];
    let user = c.name("user").map_or("", |m| m.as_str());
    if is_sentry_key(user) {
        return Some(format!("{scheme}{REDACTED}@"));
    }
    match c.name("pass").map(|m| m.as_str()) {
        Some(pass) if !pass.is_empty() => Some(format!("{scheme}{user}:{REDACTED}@")),
        _ => None,
    }
}

/// `Authorization: <scheme> x` is always masked. Without the header name, `Basic x` counts
/// when `x` decodes to `user:password`, and `Bearer x` when `x` looks like a token rather than
/// a word (`missing bearer token`, `expected Bearer credentials` stay readable).
fn authorization(c: &Captures<'_>, _: &str) -> Option<String> {
    let prefix = c.name("prefix").map_or("", |m| m.as_str());
    let token = &c["token"];
    let basic = c["scheme"].eq_ignore_ascii_case("basic");
    let plausible = !prefix.is_empty()
        || if basic {
            decodes_to_credentials(token)
        } else {
            looks_like_token(token)
        };
    if !plausible {
        return None;
    }
    let scheme = if basic { "Basic" } else { "Bearer" };
    Some(format!("{prefix}{scheme} {REDACTED}"))
}

fn decodes_to_credentials(token: &str) -> bool {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    STANDARD
        .decode(token)
        .or_else(|_| STANDARD_NO_PAD.decode(token))
        .is_ok_and(|bytes| bytes.contains(&b':'))
}

fn looks_like_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.len() >= 20
        || (bytes.len() >= 8
            && (bytes.iter().any(|b| !b.is_ascii_alphabetic())
                || bytes[1..].iter().any(u8::is_ascii_uppercase)))
}

fn leadq_key(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, e) = whole(c);
    (free_before(text, s) && free_after(text, e)).then(|| LEADQ_KEY.to_owned())
}

fn aws_key_id(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, e) = whole(c);
    (free_before(text, s) && free_after(text, e)).then(|| AWS_KEY.to_owned())
}

/// The bot id may follow letters (`/bot123…:…` in API URLs) but not digits.
fn telegram_token(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, e) = whole(c);
    let bytes = text.as_bytes();
    let before_ok = s == 0 || !bytes[s - 1].is_ascii_digit();
    let after_ok = bytes
        .get(e)
        .is_none_or(|&b| !(is_word_byte(b) || b == b'-'));
    (before_ok && after_ok).then(|| TELEGRAM_TOKEN.to_owned())
}

fn email(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, _) = whole(c);
    // `ssh://git@host`: a URL's user name, not an address.
    if text[..s].ends_with("://") {
        return None;
    }
    // `\nada@…` inside a JSON string: keep the escape whole (`\u00e9` is 5 bytes long).
    let bytes = text.as_bytes();
    let keep = if s > 0 && bytes[s - 1] == b'\\' && is_escaped(bytes, s) {
        if bytes[s] == b'u' {
            5
        } else {
            1
        }
    } else {
        0
    };
    let matched = &c[0];
    if keep >= matched.find('@').unwrap_or(0) {
        return None;
    }
    Some(format!("{}{EMAIL}", &matched[..keep]))
}

/// Accepts a phone-shaped candidate when it has 7 to 15 digits and is not glued to other
/// digits, letters, or a dotted/dashed/colon chain of numbers (versions, dates, IPs, times).
fn phone(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, e) = whole(c);
    let digits = c[0].bytes().filter(u8::is_ascii_digit).count();
    if !(7..=15).contains(&digits) || !free_before(text, s) || !free_after(text, e) {
        return None;
    }
    let bytes = text.as_bytes();
    let chain = |sep: Option<&u8>, digit: Option<&u8>| {
        matches!(sep, Some(b'.' | b'-' | b':' | b'/' | b'+'))
            && digit.is_some_and(u8::is_ascii_digit)
    };
    if s > 0 && bytes[s - 1] == b'+' {
        return None;
    }
    if s > 0
        && chain(
            bytes.get(s - 1),
            s.checked_sub(2).and_then(|i| bytes.get(i)),
        )
    {
        return None;
    }
    if chain(bytes.get(e), bytes.get(e + 1)) {
        return None;
    }
    Some(PHONE.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Sensitive key names (JSON, headers, tags).
// ---------------------------------------------------------------------------------------------

/// Key names that are sensitive wherever they appear in the name (`x-api-key`,
/// `client_secret`, `set-cookie`, `phoneNumber`), compared with separators removed.
const SENSITIVE_INFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "cookie",
    "credential",
    "sessionid",
    "signature",
    "phone",
    "email",
];

/// Key names that are sensitive as one word of the name (`access_token`, `accessToken`,
/// `sentry_dsn`, `auth`), not inside another word (`tokens_used`, `author`).
const SENSITIVE_WORDS: &[&str] = &[
    "token", "pwd", "pass", "dsn", "jwt", "otp", "auth", "sig", "msisdn", "mobile",
];

/// Whether a JSON key, header name or tag name names a secret or personal data, so that its
/// whole value is redacted (case-insensitive; `-`, `_`, `.` and camelCase separate words).
pub fn is_sensitive_key(key: &str) -> bool {
    let words = key_words(key);
    let joined = words.concat();
    SENSITIVE_INFIXES.iter().any(|s| joined.contains(s))
        || joined.ends_with("token")
        || words.iter().any(|w| SENSITIVE_WORDS.contains(&w.as_str()))
}

/// `X-Api-Key` → `[x, api, key]`; `accessToken` → `[access, token]`; `APIKey` → `[apikey]`.
fn key_words(key: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev_lower_or_digit = false;
    for ch in key.chars() {
        if !ch.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower_or_digit = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower_or_digit && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        prev_lower_or_digit = ch.is_lowercase() || ch.is_ascii_digit();
        current.extend(ch.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn is_ip_header(name: &str) -> bool {
    [
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "cf-connecting-ip",
        "true-client-ip",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The value of a sensitive key: `"[redacted]"`, except `null` and booleans, which hide nothing.
fn redact_value(v: &mut Value) {
    if !matches!(v, Value::Null | Value::Bool(_)) {
        *v = Value::String(REDACTED.to_owned());
    }
}

// ---------------------------------------------------------------------------------------------
// The process-wide scrubber.
// ---------------------------------------------------------------------------------------------

static INSTALLED: OnceLock<Scrubber> = OnceLock::new();

/// Makes `s` the process-wide scrubber returned by [`global`]. Call it once, early in `main`,
/// before logging starts; the first call wins and later calls are ignored (tests build several
/// apps per process).
pub fn install(s: Scrubber) {
    let _ = INSTALLED.set(s);
}

/// The process-wide scrubber: the one given to [`install`], or the built-in rules.
pub fn global() -> &'static Scrubber {
    INSTALLED.get().unwrap_or_else(|| &*DEFAULT)
}

// ---------------------------------------------------------------------------------------------
// Logs.
// ---------------------------------------------------------------------------------------------

/// Beyond this many bytes without a newline, pending output is scrubbed and written anyway, so
/// a writer that never ends its line cannot grow without bound.
const MAX_PENDING: usize = 1 << 20;

/// A writer that scrubs whole lines before handing them to `W`.
///
/// Bytes are held until a newline (or [`Write::flush`], or drop), so a secret split across
/// several `write` calls is still seen whole. tracing-subscriber formats an event into one
/// buffer ending in `\n` and writes it at once: that common case goes straight through, with
/// no copy when the line holds nothing to mask.
pub struct ScrubbingWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
    /// `None`: [`global`], looked up at each write (so [`install`] takes effect at once).
    scrubber: Option<Scrubber>,
}

impl<W: Write> ScrubbingWriter<W> {
    /// Scrubs with [`global`].
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            scrubber: None,
        }
    }

    /// Scrubs with `scrubber`.
    pub fn with_scrubber(inner: W, scrubber: Scrubber) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            scrubber: Some(scrubber),
        }
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let scrubber = self.scrubber.as_ref().unwrap_or_else(|| global());
        emit(&mut self.inner, scrubber, &pending)
    }
}

/// Scrubs `bytes` (UTF-8; anything else is decoded lossily) and writes the result.
fn emit<W: Write>(inner: &mut W, scrubber: &Scrubber, bytes: &[u8]) -> io::Result<()> {
    match std::str::from_utf8(bytes) {
        Ok(text) => inner.write_all(scrubber.scrub(text).as_bytes()),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            inner.write_all(scrubber.scrub(&text).as_bytes())
        }
    }
}

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let scrubber = self.scrubber.as_ref().unwrap_or_else(|| global());
        if self.pending.is_empty() && buf.last() == Some(&b'\n') {
            emit(&mut self.inner, scrubber, buf)?;
            return Ok(buf.len());
        }
        let old_len = self.pending.len();
        self.pending.extend_from_slice(buf);
        let newline = buf.iter().rposition(|&b| b == b'\n');
        if let Some(pos) = newline {
            let rest = self.pending.split_off(old_len + pos + 1);
            let lines = std::mem::replace(&mut self.pending, rest);
            emit(&mut self.inner, scrubber, &lines)?;
        } else if self.pending.len() > MAX_PENDING {
            let all = std::mem::take(&mut self.pending);
            emit(&mut self.inner, scrubber, &all)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for ScrubbingWriter<W> {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

impl<W: Write> fmt::Debug for ScrubbingWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubbingWriter")
            .field("pending_bytes", &self.pending.len())
            .field("scrubber", &self.scrubber)
            .finish_non_exhaustive()
    }
}

/// A tracing-subscriber [`MakeWriter`] whose writers scrub each line before it reaches the
/// writer made by `M`.
#[derive(Debug, Clone)]
pub struct ScrubbingMakeWriter<M> {
    inner: M,
    scrubber: Option<Scrubber>,
}

impl<M> ScrubbingMakeWriter<M> {
    /// Wraps `inner`, scrubbing with [`global`].
    pub fn new(inner: M) -> Self {
        Self {
            inner,
            scrubber: None,
        }
    }

    /// Wraps `inner`, scrubbing with `scrubber`.
    pub fn with_scrubber(inner: M, scrubber: Scrubber) -> Self {
        Self {
            inner,
            scrubber: Some(scrubber),
        }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for ScrubbingMakeWriter<M> {
    type Writer = ScrubbingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter {
            inner: self.inner.make_writer(),
            pending: Vec::new(),
            scrubber: self.scrubber.clone(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        ScrubbingWriter {
            inner: self.inner.make_writer_for(meta),
            pending: Vec::new(),
            scrubber: self.scrubber.clone(),
        }
    }
}

/// The log writer: stderr, every line scrubbed with [`global`]. Use it as
/// `fmt::layer().json().with_writer(scrub::scrubbing_stderr())`.
pub fn scrubbing_stderr() -> ScrubbingMakeWriter<fn() -> io::Stderr> {
    ScrubbingMakeWriter::new(io::stderr)
}

// ---------------------------------------------------------------------------------------------
// Sentry.
// ---------------------------------------------------------------------------------------------

/// Sentry's `before_send`: scrubs the event with [`global`] (see [`Scrubber::scrub_event`]) and
/// always sends it. Use it as
/// `ClientOptions { before_send: Some(Arc::new(scrub::scrub_sentry_event)), .. }`.
pub fn scrub_sentry_event(mut event: Event<'static>) -> Option<Event<'static>> {
    global().scrub_event(&mut event);
    Some(event)
}

/// Sentry's `before_breadcrumb`: scrubs the breadcrumb with [`global`] and keeps it.
pub fn scrub_sentry_breadcrumb(mut crumb: Breadcrumb) -> Option<Breadcrumb> {
    global().scrub_breadcrumb(&mut crumb);
    Some(crumb)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sentry::protocol::{Exception, LogEntry, Map, Request, TraceContext, User};

    use super::*;

    fn s(text: &str) -> String {
        Scrubber::default().scrub(text).into_owned()
    }

    fn assert_unchanged(text: &str) {
        let out = Scrubber::default().scrub(text);
        assert!(
            matches!(out, Cow::Borrowed(_)),
            "expected unchanged:\n  {text}\ngot:\n  {out}"
        );
    }

    const LQ_KEY: &str =
        "lq_0123456789ab_4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";

    #[test]
    fn scrubber_is_cheap_to_share() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Scrubber>();
        let a = Scrubber::default();
        let b = a.clone();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        assert!(Arc::ptr_eq(&Scrubber::default().inner, &a.inner));
        assert_eq!(
            format!("{:?}", Scrubber::new(&["x+".into()]).unwrap()),
            format!(
                "Scrubber {{ builtin_rules: {}, extra_patterns: 1 }}",
                BUILTINS.len()
            )
        );
    }

    #[test]
    fn emails_are_masked() {
        assert_eq!(s("sent to ada@example.com."), "sent to [email].");
        assert_eq!(
            s(r#"{"name":"Ada","email":"ada.lovelace+crm@mail.example.co.uk","x":1}"#),
            r#"{"name":"Ada","email":"[email]","x":1}"#
        );
        assert_eq!(s("a@b.io, C.D@E.ORG"), "[email], [email]");
        // Inside a JSON string after a \n escape, the escape survives.
        let line = r#"{"message":"lead:\nada@example.com"}"#;
        let out = s(line);
        assert_eq!(out, r#"{"message":"lead:\n[email]"}"#);
        serde_json::from_str::<Value>(&out).unwrap();
        // A URL's user name is not an address.
        assert_unchanged("git clone ssh://git@github.com/org/repo.git");
    }

    #[test]
    fn phone_numbers_are_masked_in_common_formats() {
        for phone in [
            "+7 912 345 67 89",
            "+7 (912) 345-67-89",
            "+79123456789",
            "+1 (555) 123-4567",
            "+1-555-123-4567",
            "+44 20 7946 0958",
            "+380 44 123 45 67",
            "(555) 123-4567",
            "555-123-4567",
            "555.123.4567",
            "1-555-123-4567",
            "8 912 345-67-89",
            "8 (912) 345-67-89",
            "8-912-345-67-89",
            "912 345-67-89",
            "020 7946 0958",
            "06 12 34 56 78",
        ] {
            assert_eq!(
                s(&format!("call {phone} now")),
                "call [phone] now",
                "{phone}"
            );
            assert_eq!(
                s(&format!(r#"{{"phone_hint":"{phone}"}}"#)),
                r#"{"phone_hint":"[phone]"}"#,
                "{phone}"
            );
        }
        assert_eq!(
            s("Telegram lead: +7 912 345 67 89 (ada)"),
            "Telegram lead: [phone] (ada)"
        );
    }

    #[test]
    fn numbers_that_are_not_phones_are_left_alone() {
        for text in [
            "job_id=01a20671-ec94-7581-a332-9d0618b46bad",
            "tenant 12345678-1234-1234-1234-123456789012 paused",
            "2026-11-23T03:27:39.272703Z",
            "at 2026-11-23T03:27:39+03:00 and 2026-11-23 03:27:39",
            "listening on 127.0.0.1:8080",
            "redis 10.0.0.5:6379, postgres [::1]:55432",
            "attempt=3 max_attempts=5",
            "elapsed_ms=12.5 took 1500ms (budget 30000 ms)",
            r#"{"t_enq":1795404459215.7,"t_deq":1795404459216,"seq":1204}"#,
            "version 1.85.0, build 20261123.1",
            "score 95 of 100, 3 reasons, 42 leads",
            "hash 4bf92f3577b34da6a3ce929d0e0e4736",
            "sizes 51-200, budget 50k+",
            "1 000 000 jobs",
        ] {
            assert_unchanged(text);
        }
    }

    #[test]
    fn authorization_schemes_are_masked() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(
            s(&format!("Authorization: Bearer {jwt}")),
            "Authorization: Bearer [redacted]"
        );
        assert_eq!(
            s(&format!(
                "curl -H \"Authorization: Bearer {LQ_KEY}\" /v1/leads"
            )),
            "curl -H \"Authorization: Bearer [redacted]\" /v1/leads"
        );
        assert_eq!(s("bearer abc123def456"), "Bearer [redacted]");
        assert_eq!(
            s("authorization: bearer xxx"),
            "authorization: Bearer [redacted]"
        );
        assert_eq!(
            s("Authorization: Basic dXNlcjpodW50ZXIy"),
            "Authorization: Basic [redacted]"
        );
        assert_eq!(s("sent Basic dXNlcjpodW50ZXIy"), "sent Basic [redacted]");
        assert_eq!(
            s(&format!(r#"{{"authorization":"Bearer {jwt}"}}"#)),
            r#"{"authorization":"[redacted]"}"#
        );
        assert_eq!(
            s("authorization=Bearer abc123def456"),
            "authorization=Bearer [redacted]"
        );
        assert_unchanged("missing bearer token");
        assert_unchanged("expected Bearer credentials, got Basic");
        assert_unchanged("a basic lead with basic information");
    }

    #[test]
    fn leadq_api_keys_are_masked() {
        assert_eq!(
            s(&format!("key {LQ_KEY} refused")),
            "key lq_[redacted] refused"
        );
        assert_eq!(
            s(&format!(r#"{{"k":"{LQ_KEY}"}}"#)),
            r#"{"k":"lq_[redacted]"}"#
        );
        assert_eq!(s(&format!("api_key={LQ_KEY}")), "api_key=[redacted]");
        // The prefix alone is the key's public id.
        assert_unchanged("key lq_0123456789ab revoked");
    }

    #[test]
    fn secrets_are_masked_by_key_name() {
        let cases = [
            ("password=hunter2 user=ada", "password=[redacted] user=ada"),
            ("db_password=hunter2", "db_password=[redacted]"),
            ("passwd=x1 pwd=x2", "passwd=[redacted] pwd=[redacted]"),
            (
                "secret=s3 client_secret=abc",
                "secret=[redacted] client_secret=[redacted]",
            ),
            (
                "api_key=k1, apikey=k2; token=t3",
                "api_key=[redacted], apikey=[redacted]; token=[redacted]",
            ),
            (
                "access_token=a&refresh_token=b",
                "access_token=[redacted]&refresh_token=[redacted]",
            ),
            (
                r#"{"password":"hunter2","a":1}"#,
                r#"{"password":"[redacted]","a":1}"#,
            ),
            (
                r#"{"Password" : "hunter2"}"#,
                r#"{"Password" : "[redacted]"}"#,
            ),
            (
                r#"{"api_key":"k","token":12345}"#,
                r#"{"api_key":"[redacted]","token":[redacted]}"#,
            ),
            (
                r#"{"token":null,"secret":""}"#,
                r#"{"token":null,"secret":""}"#,
            ),
            (r#"password="hunter 2""#, r#"password="[redacted]""#),
            (
                "Config { client_secret: \"abc\" }",
                "Config { client_secret: \"[redacted]\" }",
            ),
            ("password: hunter2", "password: [redacted]"),
            (
                "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key=[redacted]",
            ),
            (
                "SENTRY_DSN=https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/4",
                "SENTRY_DSN=[redacted]",
            ),
            // A JSON document quoted inside a JSON log line stays valid JSON.
            (
                r#"{"message":"body {\"password\":\"hunter2\",\"name\":\"Ada\"}"}"#,
                r#"{"message":"body {\"password\":\"[redacted]\",\"name\":\"Ada\"}"}"#,
            ),
            (
                r#"{"message":"bad input password=hunter2\"x"}"#,
                r#"{"message":"bad input password=[redacted]\"x"}"#,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(s(input), expected, "{input}");
        }
        let line = s(r#"{"message":"body {\"password\":\"hunter2\"}"}"#);
        serde_json::from_str::<Value>(&line).unwrap();
        // Prose and look-alike keys.
        assert_unchanged("refresh token: timeout after 3 attempts");
        assert_unchanged("token_count=5 max_tokens=100 secret_version=3 api_key_id=7");
        assert_unchanged(r#"{"idempotency_key":"abc","kind":"secret"}"#);
    }

    #[test]
    fn pretty_log_colours_do_not_hide_a_secret() {
        let line =
            "\x1b[3mpassword\x1b[0m\x1b[2m=\x1b[0mhunter2 \x1b[3muser\x1b[0m\x1b[2m=\x1b[0mada";
        let out = s(line);
        assert!(!out.contains("hunter2"), "{out:?}");
        assert!(out.contains("ada"), "{out:?}");
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        let cases = [
            ("GET /cb?token=abc&x=1", "GET /cb?token=[redacted]&x=1"),
            ("/hook?x=1&sig=0a1b2c&y=2", "/hook?x=1&sig=[redacted]&y=2"),
            ("/hook?signature=0a1b2c", "/hook?signature=[redacted]"),
            ("https://maps.example.com/api?key=AIzaSyD-abc&q=x", "https://maps.example.com/api?key=[redacted]&q=x"),
            ("/login?auth=xyz#top", "/login?auth=[redacted]#top"),
            (
                "https://b.s3.amazonaws.com/o?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00d",
                "https://b.s3.amazonaws.com/o?X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(s(input), expected, "{input}");
        }
        assert_unchanged("/v1/leads?limit=50&cursor=01a20671&design=x");
    }

    #[test]
    fn credentials_in_connection_strings_are_masked() {
        let cases = [
            ("postgres://leadq:hunter2@db:5432/leadq", "postgres://leadq:[redacted]@db:5432/leadq"),
            ("postgresql://u:p%40ss@10.0.0.4/x?sslmode=require", "postgresql://u:[redacted]@10.0.0.4/x?sslmode=require"),
            ("redis://:hunter2@10.0.0.5:6379/0", "redis://:[redacted]@10.0.0.5:6379/0"),
            ("rediss://default:hunter2@cache.example.com:6380", "rediss://default:[redacted]@cache.example.com:6380"),
            ("amqp://guest:guest@rabbit:5672/%2f", "amqp://guest:[redacted]@rabbit:5672/%2f"),
            ("mysql://root:p@ss@db/app", "mysql://root:[redacted]@db/app"),
            ("mongodb+srv://app:s3cr3t@cluster0.example.net/db", "mongodb+srv://app:[redacted]@cluster0.example.net/db"),
            ("https://user:pass@example.com/x", "https://user:[redacted]@example.com/x"),
            (
                "error connecting to \"redis://:hunter2@10.0.0.5:6379/0\": refused",
                "error connecting to \"redis://:[redacted]@10.0.0.5:6379/0\": refused",
            ),
            (
                "dsn https://0123456789abcdef0123456789abcdef@o123.ingest.sentry.io/456",
                "dsn https://[redacted]@o123.ingest.sentry.io/456",
            ),
            (
                "https://0123456789abcdef0123456789abcdef:fedcba9876543210fedcba9876543210@sentry.example.com/2",
                "https://[redacted]@sentry.example.com/2",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(s(input), expected, "{input}");
        }
        assert_unchanged("GET http://localhost:8080/v1/status?x=1 from 127.0.0.1");
        assert_unchanged("redis://10.0.0.5:6379/0");
    }

    #[test]
    fn aws_access_keys_are_masked() {
        assert_eq!(s("key AKIAIOSFODNN7EXAMPLE used"), "key [aws-key] used");
        assert_eq!(
            s(r#"{"id":"ASIAY34FZKBOKMUTVV7A"}"#),
            r#"{"id":"[aws-key]"}"#
        );
        assert_eq!(
            s("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "aws_secret_access_key = [redacted]"
        );
        assert_unchanged("XAKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPL");
    }

    #[test]
    fn telegram_bot_tokens_are_masked() {
        let token = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ";
        assert_eq!(token.split(':').nth(1).unwrap().len(), 35);
        assert_eq!(s(&format!("bot {token} up")), "bot [telegram-token] up");
        assert_eq!(
            s(&format!(
                "POST https://api.telegram.org/bot{token}/sendMessage"
            )),
            "POST https://api.telegram.org/bot[telegram-token]/sendMessage"
        );
        assert_unchanged("ratio 110201543:12, at 03:27:39");
    }

    #[test]
    fn extra_patterns_are_masked_and_bad_ones_refused() {
        let scrubber = Scrubber::new(&[
            r"ACME-\d{6}".into(),
            "  ".into(),
            r"(?i)inn\s*\d{10}".into(),
        ])
        .unwrap();
        assert_eq!(
            scrubber.scrub("order ACME-123456 for INN 7707083893"),
            "order [redacted] for [redacted]"
        );
        // Extras run after the built-in rules, never instead of them.
        assert_eq!(scrubber.scrub("ada@example.com"), "[email]");

        let err = Scrubber::new(&["ok".into(), "(unclosed".into()]).unwrap_err();
        assert!(
            matches!(&err, ScrubError::InvalidPattern { pattern, .. } if pattern == "(unclosed")
        );
        assert!(err.to_string().contains("\"(unclosed\""), "{err}");
        assert!(std::error::Error::source(&err).is_some());

        let err = Scrubber::new(&["a*".into()]).unwrap_err();
        assert!(matches!(&err, ScrubError::MatchesEmpty { pattern } if pattern == "a*"));
        assert!(err.to_string().contains("\"a*\""), "{err}");
    }

    #[test]
    fn ordinary_log_lines_come_back_borrowed() {
        for line in [
            r#"{"timestamp":"2026-11-23T03:27:39.272703Z","level":"WARN","message":"Job run failed.","kind":"lead_score"}"#,
            r#"{"timestamp":"2026-11-23T03:27:40.001Z","level":"INFO","message":"lead scored","score":95,"tier":"hot","spans":[{"correlation_id":"01a20671-ec94-7581-a332-9d0618b46bad","tenant_id":"4c1d9e2a-5b7f-4e8a-9c3d-2f1e0a9b8c7d","name":"job"}]}"#,
            "job_id=01a20671-ec94-7581-a332-9d0618b46bad attempt=3 elapsed_ms=12.5",
            "Лид от Ады: бюджет 50k+, сроки — этот месяц ✓",
            "",
        ] {
            assert_unchanged(line);
        }
    }

    #[test]
    fn scrubbing_is_idempotent() {
        for text in [
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc password=x ada@example.com",
            "redis://:hunter2@10.0.0.5:6379/0 +7 912 345 67 89 AKIAIOSFODNN7EXAMPLE",
            r#"{"token":"t","message":"see https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/4?sig=1"}"#,
        ] {
            let once = s(text);
            assert_ne!(once, text);
            assert_unchanged(&once);
        }
    }

    #[test]
    fn json_values_are_scrubbed_and_sensitive_keys_redacted() {
        let mut v = serde_json::json!({
            "external_id": "tg-1001",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "email_verified": true,
            "phoneNumber": 79123456789u64,
            "headers": {
                "X-Api-Key": "abc",
                "Set-Cookie": "sid=1",
                "Authorization": "Bearer x",
                "User-Agent": "curl/8"
            },
            "client_secret": {"nested": "x"},
            "accessToken": "t",
            "sentry_dsn": null,
            "answers": {"need": "call me at +7 912 345 67 89 or ada@example.com", "budget": "50k+"},
            "notes": ["password=hunter2", 3, null],
            "tokens_used": 12,
            "author": "ada"
        });
        Scrubber::default().scrub_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "external_id": "tg-1001",
                "name": "Ada Lovelace",
                "email": "[redacted]",
                "email_verified": true,
                "phoneNumber": "[redacted]",
                "headers": {
                    "X-Api-Key": "[redacted]",
                    "Set-Cookie": "[redacted]",
                    "Authorization": "[redacted]",
                    "User-Agent": "curl/8"
                },
                "client_secret": "[redacted]",
                "accessToken": "[redacted]",
                "sentry_dsn": null,
                "answers": {"need": "call me at [phone] or [email]", "budget": "50k+"},
                "notes": ["password=[redacted]", 3, null],
                "tokens_used": 12,
                "author": "ada"
            })
        );
    }

    #[test]
    fn sensitive_key_names() {
        for key in [
            "password",
            "Password",
            "db_password",
            "passwd",
            "pwd",
            "secret",
            "client_secret",
            "token",
            "access_token",
            "refreshToken",
            "csrftoken",
            "authorization",
            "Proxy-Authorization",
            "api_key",
            "apiKey",
            "APIKey",
            "x-api-key",
            "X-Api-Key",
            "cookie",
            "set-cookie",
            "phone",
            "phone_number",
            "email",
            "emails",
            "dsn",
            "sentry_dsn",
            "auth",
            "sig",
            "signature",
            "aws_secret_access_key",
            "private_key",
            "session_id",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in [
            "name",
            "kind",
            "tenant_id",
            "message_id",
            "tokens_used",
            "max_tokens",
            "author",
            "key",
            "idempotency_key",
            "design",
            "status",
        ] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }

    /// An `io::Write` that records every `write` call.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_writer_scrubs_a_line_split_over_several_writes() {
        let out = Capture::default();
        let mut w = ScrubbingWriter::with_scrubber(out.clone(), Scrubber::default());
        for part in [
            r#"{"message":"login","pass"#,
            r#"word":"hun"#,
            r#"ter2","to":"ada@exa"#,
            "mple.com\"}\n{\"message\":\"next\",\"phone\":\"+7 912 ",
        ] {
            w.write_all(part.as_bytes()).unwrap();
        }
        // The first line went out whole and scrubbed; the second waits for its end.
        assert_eq!(
            out.text(),
            "{\"message\":\"login\",\"password\":\"[redacted]\",\"to\":\"[email]\"}\n"
        );
        w.write_all(b"345 67 89\"}").unwrap();
        w.flush().unwrap();
        assert_eq!(
            out.text(),
            concat!(
                "{\"message\":\"login\",\"password\":\"[redacted]\",\"to\":\"[email]\"}\n",
                "{\"message\":\"next\",\"phone\":\"[phone]\"}",
            )
        );
        // What is left at drop is written too.
        w.write_all(b"token=abc").unwrap();
        drop(w);
        assert!(out.text().ends_with("token=[redacted]"), "{}", out.text());
    }

    #[test]
    fn the_writer_uses_the_global_scrubber_by_default() {
        let out = Capture::default();
        let mut w = ScrubbingWriter::new(out.clone());
        w.write_all(b"redis://:hunter2@10.0.0.5:6379/0\n").unwrap();
        assert_eq!(out.text(), "redis://:[redacted]@10.0.0.5:6379/0\n");
        let _ = scrubbing_stderr().make_writer();
    }

    #[test]
    fn log_events_are_scrubbed_through_tracing_subscriber() {
        let out = Capture::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(ScrubbingMakeWriter::with_scrubber(
                move || sink.clone(),
                Scrubber::default(),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                email = "ada@example.com",
                url = "postgres://leadq:hunter2@db/leadq",
                kind = "lead_score",
                "Job run failed for +7 912 345 67 89"
            );
        });
        let text = out.text();
        assert!(text.ends_with('\n'), "{text}");
        let line: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["email"], "[email]");
        assert_eq!(line["url"], "postgres://leadq:[redacted]@db/leadq");
        assert_eq!(line["kind"], "lead_score");
        assert_eq!(line["message"], "Job run failed for [phone]");
    }

    #[test]
    fn sentry_events_are_scrubbed() {
        let mut event = Event::new();
        event.message = Some("login failed for ada@example.com with password=hunter2".into());
        event.transaction = Some("POST /v1/leads".into());
        event.server_name = Some("worker-1".into());
        event.logentry = Some(LogEntry {
            message: "connect redis://:hunter2@10.0.0.5:6379/0".into(),
            params: vec!["ada@example.com".into()],
        });
        event.exception.values.push(Exception {
            ty: "Error".into(),
            value: Some(format!("key {LQ_KEY} rejected")),
            ..Default::default()
        });
        let mut data = Map::new();
        data.insert("phone".into(), Value::from("+7 912 345 67 89"));
        data.insert("url".into(), Value::from("/cb?token=abc&x=1"));
        event.breadcrumbs.values.push(Breadcrumb {
            message: Some("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig".into()),
            data,
            ..Default::default()
        });
        event.extra.insert("api_key".into(), Value::from("abc"));
        event
            .extra
            .insert("note".into(), Value::from("call 555-123-4567"));
        event.tags.insert("tenant".into(), "acme".into());
        event
            .tags
            .insert("contact".into(), "ada@example.com".into());
        event.tags.insert("token".into(), "t0k3n".into());
        let mut other = Map::new();
        other.insert(
            "dsn".into(),
            Value::from("https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/4"),
        );
        other.insert("host".into(), Value::from("mysql://root:hunter2@db/app"));
        event.contexts.insert("job".into(), Context::Other(other));
        let trace = TraceContext {
            description: Some("GET /cb?sig=f00d".into()),
            ..Default::default()
        };
        event
            .contexts
            .insert("trace".into(), Context::Trace(Box::new(trace)));
        let mut headers = Map::new();
        headers.insert("Authorization".into(), "Bearer abc".into());
        headers.insert("Cookie".into(), "sid=1".into());
        headers.insert("X-Forwarded-For".into(), "203.0.113.9".into());
        headers.insert("Content-Type".into(), "application/json".into());
        let mut env = Map::new();
        env.insert("REMOTE_ADDR".into(), "203.0.113.9".into());
        event.request = Some(Request {
            url: Some(
                "https://u:hunter2@api.example.com/v1/leads?token=abc&page=2"
                    .parse()
                    .unwrap(),
            ),
            method: Some("POST".into()),
            data: Some(r#"{"email":"ada@example.com","name":"Ada","note":"pwd=hunter2"}"#.into()),
            query_string: Some("token=abc&sig=f00d&page=2".into()),
            cookies: Some("sid=hunter2".into()),
            headers,
            env,
        });
        event.user = Some(User {
            id: Some("user-42".into()),
            email: Some("ada@example.com".into()),
            ip_address: Some("203.0.113.9".parse().unwrap()),
            username: Some("ada".into()),
            ..Default::default()
        });

        let event = scrub_sentry_event(event).expect("the hook keeps the event");
        let json = serde_json::to_string(&event).unwrap();
        for leak in [
            "ada@example.com",
            "hunter2",
            "+7 912",
            "555-123-4567",
            "eyJhbGciOi",
            "4f3c2a1b0e9d",
            "t0k3n",
            "0123456789abcdef0123456789abcdef",
            "203.0.113.9",
            "token=abc",
            "sig=f00d",
            "sid=1",
            "\"ada\"",
        ] {
            assert!(!json.contains(leak), "{leak} leaked: {json}");
        }
        assert_eq!(event.transaction.as_deref(), Some("POST /v1/leads"));
        assert_eq!(event.server_name.as_deref(), Some("worker-1"));
        assert_eq!(
            event.message.as_deref(),
            Some("login failed for [email] with password=[redacted]")
        );
        assert_eq!(event.tags["tenant"], "acme");
        assert_eq!(event.tags["token"], "[redacted]");
        assert_eq!(event.extra["api_key"], "[redacted]");
        let user = event.user.as_ref().unwrap();
        assert_eq!(user.id.as_deref(), Some("user-42"));
        assert!(user.email.is_none() && user.ip_address.is_none() && user.username.is_none());
        let req = event.request.as_ref().unwrap();
        assert_eq!(
            req.query_string.as_deref(),
            Some("token=[redacted]&sig=[redacted]&page=2")
        );
        assert_eq!(req.headers["Content-Type"], "application/json");
        assert_eq!(req.headers["Authorization"], "[redacted]");
        let body: Value = serde_json::from_str(req.data.as_deref().unwrap()).unwrap();
        assert_eq!(body["name"], "Ada");
        assert_eq!(body["email"], "[redacted]");
        let url = req.url.as_ref().unwrap();
        assert_eq!(url.host_str(), Some("api.example.com"));
        assert_eq!(url.query(), Some("token=[redacted]&page=2"));

        let crumb = scrub_sentry_breadcrumb(Breadcrumb {
            message: Some("to ada@example.com".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(crumb.message.as_deref(), Some("to [email]"));
    }
}
