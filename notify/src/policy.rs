//! What happens to an alert between `Notifier::report` and Telegram: ignored or not,
//! scrubbed, fingerprinted, then sent at once, counted as a repeat, or put in the digest.
//!
//! 1. **Ignored**: its route matches `LEADQ_ALERT_IGNORED_PATHS` (a template, or a prefix),
//!    or its kind or code matches `LEADQ_ALERT_IGNORED_ERRORS` (`<kind>`, `<code>` or
//!    `<kind>:<code>`). Counted `ignored`; nothing else happens.
//! 2. **Scrubbed**: title, every field (a field whose name is sensitive is redacted whole) and
//!    every cause line go through the process's scrubber (built-in rules plus
//!    `LEADQ_SCRUB_PATTERNS`); the cause chain is cut to `LEADQ_ALERT_MAX_TRACE_LINES`.
//! 3. **Decided in Redis** (`leadq_queue::alert_state`), shared by every process: a critical
//!    alert is sent at once unless its fingerprint was sent within the rate-limit window
//!    (then `rate_limited`, counted as a repeat in the digest); a non-critical one goes into
//!    the digest (`batched`, or `deduplicated` when its fingerprint is already there).
//! 4. **Digest**: every process polls; once the batch window has passed since the digest's
//!    first line, the first process to ask takes it and sends it as one message.
//!
//! If Redis cannot be reached, critical alerts are still sent, rate-limited per process;
//! non-critical ones are counted `failed`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use leadq_platform::metrics::alert_outcome as outcome;
use leadq_platform::scrub::{is_sensitive_key, Scrubber, REDACTED};
use leadq_queue::alert_state::{AlertState, AlertTiming, Recorded};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::alert::{Alert, Severity};
use crate::render::{self, Origin};
use crate::sender::Outgoing;
use crate::{Config, Stats};

/// Longest digest summary line, in characters.
const SUMMARY_MAX: usize = 200;
/// Longest field value, in characters (the message cap handles the rest).
const FIELD_MAX: usize = 500;

/// Whether `alert` matches the ignored paths or errors.
pub fn ignored(alert: &Alert, paths: &[String], errors: &[String]) -> bool {
    let path_hit = alert.path.as_deref().is_some_and(|p| {
        paths.iter().any(|i| {
            p == i
                || p.strip_prefix(i.as_str())
                    .is_some_and(|rest| i.ends_with('/') || rest.starts_with('/'))
        })
    });
    let code = alert.code.as_deref().unwrap_or("");
    let error_hit = errors.iter().any(|e| {
        e == &alert.kind
            || (!code.is_empty() && (e == code || *e == format!("{}:{code}", alert.kind)))
    });
    path_hit || error_hit
}

fn cap(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `alert` with every text scrubbed and its cause chain cut to `max_trace_lines` lines.
pub fn sanitize(mut alert: Alert, scrubber: &Scrubber, max_trace_lines: usize) -> Alert {
    let clean = |s: &str| scrubber.scrub(s).into_owned();
    alert.title = clean(&alert.title);
    alert.kind = clean(&alert.kind);
    alert.code = alert.code.as_deref().map(clean);
    alert.location = alert.location.as_deref().map(clean);
    alert.path = alert.path.as_deref().map(clean);
    for (name, value) in &mut alert.fields {
        *value = if is_sensitive_key(name) {
            REDACTED.to_owned()
        } else {
            cap(&clean(value), FIELD_MAX)
        };
        *name = clean(name);
    }
    let lines: Vec<String> = alert
        .causes
        .iter()
        .flat_map(|c| c.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let total = lines.len();
    alert.causes = lines
        .into_iter()
        .take(max_trace_lines)
        .map(|l| cap(&clean(&l), FIELD_MAX))
        .collect();
    if total > max_trace_lines && max_trace_lines > 0 {
        alert
            .causes
            .push(format!("… {} more line(s)", total - max_trace_lines));
    }
    alert
}

/// The digest line of a (scrubbed) alert.
fn summary(a: &Alert, process: &str) -> String {
    let code = a
        .code
        .as_deref()
        .map(|c| format!("/{c}"))
        .unwrap_or_default();
    let mut s = format!("{} [{}{code}] ({process})", a.title, a.kind);
    if let Some(first) = a.causes.first() {
        s.push_str(" — ");
        s.push_str(first);
    }
    cap(&s, SUMMARY_MAX)
}

/// The policy task of one process.
pub(crate) struct Pipeline {
    pub(crate) config: Arc<Config>,
    pub(crate) state: AlertState,
    pub(crate) out: mpsc::Sender<Outgoing>,
    pub(crate) stats: Arc<Stats>,
    /// Last immediate message per fingerprint, for when Redis is unreachable.
    local: HashMap<String, Instant>,
}

impl Pipeline {
    pub(crate) fn new(
        config: Arc<Config>,
        state: AlertState,
        out: mpsc::Sender<Outgoing>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            config,
            state,
            out,
            stats,
            local: HashMap::new(),
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            environment: self.config.environment.clone(),
            process: self.config.process.clone(),
        }
    }

    fn timing(&self) -> AlertTiming {
        let p = &self.config.channel.policy;
        AlertTiming {
            rate_limit: p.rate_limit,
            batch_window: p.batch_window,
            ttl: p.state_ttl,
        }
    }

    /// Handles alerts and polls the digest until the alert channel closes.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Alert>) {
        let window = self.config.channel.policy.batch_window;
        let poll = (window / 5).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                alert = rx.recv() => match alert {
                    Some(a) => self.handle(a).await,
                    None => break,
                },
                _ = tick.tick() => self.flush().await,
            }
        }
    }

    async fn handle(&mut self, alert: Alert) {
        let policy = &self.config.channel.policy;
        if ignored(&alert, &policy.ignored_paths, &policy.ignored_errors) {
            self.stats.count(outcome::IGNORED);
            return;
        }
        let alert = sanitize(alert, &self.config.scrubber, policy.max_trace_lines);
        let fp = alert.fingerprint();
        let critical = alert.severity == Severity::Critical;
        let line = summary(&alert, &self.config.process);
        match self.state.record(&fp, critical, &line, self.timing()).await {
            Ok(Recorded::Send) => self.emit(render::alert(&alert, &fp, &self.origin())),
            Ok(Recorded::RateLimited) => self.stats.count(outcome::RATE_LIMITED),
            Ok(Recorded::Batched) => self.stats.count(outcome::BATCHED),
            Ok(Recorded::Deduplicated) => self.stats.count(outcome::DEDUPLICATED),
            Err(error) => {
                tracing::warn!(error = %error, "Alert state unreachable in Redis; deciding locally.");
                let rate = policy.rate_limit;
                let now = Instant::now();
                self.local.retain(|_, t| now.duration_since(*t) < rate);
                let fresh = !self.local.contains_key(&fp) && self.local.len() < 1000;
                if critical && fresh {
                    self.local.insert(fp.clone(), now);
                    self.emit(render::alert(&alert, &fp, &self.origin()));
                } else {
                    self.stats.count(outcome::FAILED);
                }
            }
        }
    }

    async fn flush(&mut self) {
        match self.state.take_due_digest().await {
            Ok(Some(lines)) => {
                let html = render::digest(
                    &lines,
                    self.config.channel.policy.batch_window,
                    &self.origin(),
                );
                self.emit(html);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %error, "Could not read the alert digest from Redis.");
            }
        }
    }

    fn emit(&self, html: String) {
        if self.out.try_send(Outgoing { html }).is_err() {
            self.stats.count(outcome::DROPPED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_paths_match_templates_and_prefixes_and_errors_match_kind_or_code() {
        let paths = vec!["/healthz".to_owned(), "/v1/dlq".to_owned()];
        let errors = vec![
            "queue_unavailable".to_owned(),
            "dead_letter:crm_not_configured".to_owned(),
        ];
        let a = |path: &str, kind: &str, code: Option<&str>| {
            let mut a = Alert::new(Severity::NonCritical, kind, "x").path(path);
            a.code = code.map(str::to_owned);
            a
        };
        assert!(ignored(&a("/healthz", "internal", None), &paths, &errors));
        assert!(ignored(
            &a("/v1/dlq/{kind}/redrive", "internal", None),
            &paths,
            &errors
        ));
        assert!(!ignored(&a("/v1/dlqx", "internal", None), &paths, &errors));
        assert!(!ignored(&a("/v1/leads", "internal", None), &paths, &errors));
        assert!(ignored(
            &a("/v1/leads", "queue_unavailable", None),
            &paths,
            &errors
        ));
        assert!(ignored(
            &a("-", "dead_letter", Some("crm_not_configured")),
            &paths,
            &errors
        ));
        assert!(!ignored(
            &a("-", "dead_letter", Some("bad_signature")),
            &paths,
            &errors
        ));
    }

    #[test]
    fn every_text_is_scrubbed_and_the_trace_capped() {
        let a = Alert::new(
            Severity::Critical,
            "internal",
            "connect postgres://leadq:hunter2@db:5432/leadq failed",
        )
        .field("authorization", "Bearer abcdefghijklmnopqrstuvwxyz")
        .field("user", "ada@example.com")
        .cause("line 1 token=abc123\nline 2\nline 3\nline 4");
        let s = sanitize(a, &Scrubber::default(), 2);
        let all = format!("{s:?}");
        for secret in ["hunter2", "abcdefghijklmnop", "ada@example.com", "abc123"] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        assert_eq!(s.causes.len(), 3, "{:?}", s.causes);
        assert_eq!(s.causes[2], "… 2 more line(s)");
        let none = sanitize(
            Alert::new(Severity::Critical, "k", "t").cause("a\nb"),
            &Scrubber::default(),
            0,
        );
        assert!(none.causes.is_empty());
    }
}
