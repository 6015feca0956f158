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

//!
//! # Layout
//! - `mod.rs`: [`Scrubber`] (build, scrub text and JSON, Sentry events), the markers, the
//!   process-wide scrubber ([`install`], [`global`]).
//! - `rules.rs`: the built-in rules table and the functions that decide each replacement.
//! - `writer.rs`: the scrubbing log writer and the Sentry hooks.
//! - `tests.rs`: the unit tests.

mod rules;
mod writer;

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock, OnceLock};

use regex::{Regex, RegexSet};
use sentry::protocol::{Breadcrumb, Context, Event, Stacktrace, Url, Value};

pub use rules::is_sensitive_key;
use rules::*;
pub use writer::{
    scrub_sentry_breadcrumb, scrub_sentry_event, scrubbing_stderr, ScrubbingMakeWriter,
    ScrubbingWriter,
};

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

/// Why [`Scrubber::new`] refused the extra patterns. Each variant names the pattern by its
/// position (1-based, in the list as given), never by its text: a pattern is often the secret
/// itself, or most of it, and this error is printed in the configuration report.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    /// The pattern is not a valid regular expression (syntax of the `regex` crate).
    #[error("scrub pattern #{position} is not a valid regular expression")]
    InvalidPattern {
        /// Where the pattern is in the list (1-based).
        position: usize,
        /// The pattern as given (not displayed).
        pattern: String,
        /// What the regex compiler said (it quotes the pattern: not displayed either).
        #[source]
        source: regex::Error,
    },
    /// The pattern matches the empty string (say `a*`): it would mask nothing useful and
    /// would stamp `[redacted]` between characters.
    #[error("scrub pattern #{position} matches the empty string")]
    MatchesEmpty {
        /// Where the pattern is in the list (1-based).
        position: usize,
        /// The pattern as given (not displayed).
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
        for (i, pattern) in extra_patterns.iter().enumerate() {
            if pattern.trim().is_empty() {
                continue;
            }
            let re = Regex::new(pattern).map_err(|source| ScrubError::InvalidPattern {
                position: i + 1,
                pattern: pattern.clone(),
                source,
            })?;
            if re.is_match("") {
                return Err(ScrubError::MatchesEmpty {
                    position: i + 1,
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

static DEFAULT: LazyLock<Scrubber> =
    LazyLock::new(|| Scrubber::new(&[]).expect("built-in scrub patterns compile"));

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

#[cfg(test)]
mod tests;
