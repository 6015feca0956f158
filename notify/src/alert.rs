//! The alert: what went wrong, how bad it is, and what an operator needs to find it.

/// How urgently a human should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Sent at once (panics, dead letters of security reasons, a dependency down), at most
    /// once per fingerprint per rate-limit window; repeats go into the digest.
    Critical,
    /// Gathered into one digest per batch window.
    NonCritical,
}

/// Dead-letter reasons that mean someone tampered with a job or ran it without the right:
/// their alerts are critical.
pub const SECURITY_REASONS: &[&str] = &["bad_signature", "unauthorized"];

/// Error codes that mean a dependency (PostgreSQL, Redis) is down: their alerts are critical.
pub const DEPENDENCY_DOWN_CODES: &[&str] = &[
    "queue_unavailable",
    "database_unavailable",
    "redis_unavailable",
    "dependency_down",
];

/// One alert, before scrubbing. Every text in it is scrubbed before it leaves the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// How urgent.
    pub severity: Severity,
    /// The error kind or code: `internal`, `queue_unavailable`, `dead_letter`, `panic`, …
    /// Part of the fingerprint; matched by `LEADQ_ALERT_IGNORED_ERRORS`.
    pub kind: String,
    /// A finer code within the kind (a dead letter's reason); also matched by the ignored
    /// errors, alone or as `<kind>:<code>`.
    pub code: Option<String>,
    /// Where in the code (`file:line`) or which queue: part of the fingerprint, so the same
    /// error from the same place is one alert whatever its varying values.
    pub location: Option<String>,
    /// One line: what happened.
    pub title: String,
    /// Context, in order: tenant, job id, correlation id, route, …
    pub fields: Vec<(String, String)>,
    /// The cause chain or backtrace, outermost first (capped at
    /// `LEADQ_ALERT_MAX_TRACE_LINES` before sending).
    pub causes: Vec<String>,
    /// The route template of the request, matched by `LEADQ_ALERT_IGNORED_PATHS`.
    pub path: Option<String>,
}

impl Alert {
    /// An alert of `kind` saying `title`.
    pub fn new(severity: Severity, kind: impl Into<String>, title: impl Into<String>) -> Self {
        Self {
            severity,
            kind: kind.into(),
            code: None,
            location: None,
            title: title.into(),
            fields: Vec::new(),
            causes: Vec::new(),
            path: None,
        }
    }

    /// With a finer code (see [`Alert::code`]).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// With a code location (see [`Alert::location`]).
    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// With one more field.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// With one more line of cause chain.
    pub fn cause(mut self, line: impl Into<String>) -> Self {
        self.causes.push(line.into());
        self
    }

    /// With the request's route template.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// A dead-lettered job. Never the payload: only its kind, why, whose, and the ids to find
    /// it (`leadq dlq show`). Critical when the reason is a security one.
    pub fn dead_letter(job: &DeadLetter<'_>) -> Self {
        let severity = if SECURITY_REASONS.contains(&job.reason) {
            Severity::Critical
        } else {
            Severity::NonCritical
        };
        Alert::new(
            severity,
            "dead_letter",
            format!("Job dead-lettered: {} ({})", job.kind, job.reason),
        )
        .with_code(job.reason)
        .at(job.kind)
        .field("kind", job.kind)
        .field("reason", job.reason)
        .field("tenant", job.tenant)
        .field("job_id", job.job_id)
        .field("correlation_id", job.correlation_id)
    }

    /// The fingerprint: error kind and code location (or message template), never the
    /// varying values. See [`crate::fingerprint`].
    pub fn fingerprint(&self) -> String {
        crate::fingerprint::of(self)
    }
}

/// What a dead-letter alert says (see [`Alert::dead_letter`]).
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// The job kind (queue).
    pub kind: &'a str,
    /// Why it was dead-lettered: an error code, or `bad_signature`, `poisoned`, …
    pub reason: &'a str,
    /// The tenant's slug (its id when the slug is unknown, `unverified` when the envelope's
    /// claim cannot be trusted).
    pub tenant: &'a str,
    /// The job id.
    pub job_id: &'a str,
    /// The correlation id of the request that caused it.
    pub correlation_id: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_dead_letters_are_critical_and_carry_no_payload() {
        let job = |reason| DeadLetter {
            kind: "lead_score",
            reason,
            tenant: "acme",
            job_id: "0190-job",
            correlation_id: "corr-1",
        };
        let bad = Alert::dead_letter(&job("bad_signature"));
        assert_eq!(bad.severity, Severity::Critical);
        let names: Vec<&str> = bad.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["kind", "reason", "tenant", "job_id", "correlation_id"]
        );
        assert_eq!(
            Alert::dead_letter(&job("crm_not_configured")).severity,
            Severity::NonCritical
        );
        assert_ne!(
            bad.fingerprint(),
            Alert::dead_letter(&job("unauthorized")).fingerprint()
        );
    }
}
