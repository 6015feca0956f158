//! What a handler's failure means for its job.
//!
//! Every failure is classified where it happens, because only the handler knows whether trying
//! again can help. The queue engine turns the class into an action:
//!
//! | variant         | action                                                          |
//! |-----------------|-----------------------------------------------------------------|
//! | `Transient`     | retry with exponential backoff and jitter, up to the kind's max attempts, then dead-letter (`max_attempts`) |
//! | `Permanent`     | dead-letter now, with the error code as reason                  |
//! | `RateLimited`   | run again after `retry_after`, without using an attempt         |
//!
//! A panic or a timeout counts as transient (`panic`, `timeout`). Our own database being
//! unreachable is not the job's fault: it waits like a rate limit (`db_unavailable`, a few
//! seconds, no attempt used), so a PostgreSQL outage dead-letters nothing, however long.

use std::time::Duration;

/// A classified job failure. `code` is a stable snake_case string: it is stored with dead
/// letters and in `job_runs.last_error_code`, and may appear in metrics, so it must never
/// carry data.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying: network errors, 5xx, a database that is down.
    #[error("transient failure ({code})")]
    Transient {
        /// Stable error code.
        code: &'static str,
        /// The underlying error, for logs.
        #[source]
        source: anyhow::Error,
    },
    /// Retrying cannot help: a malformed payload, an unknown tenant, a 4xx.
    #[error("permanent failure ({code})")]
    Permanent {
        /// Stable error code, used as the dead-letter reason.
        code: &'static str,
        /// The underlying error, for logs.
        #[source]
        source: anyhow::Error,
    },
    /// The downstream asked us to wait, or our own database is unreachable.
    #[error("rate limited ({code}); retry after {retry_after:?}")]
    RateLimited {
        /// Stable error code.
        code: &'static str,
        /// How long to wait before the next run.
        retry_after: Duration,
    },
}

impl JobError {
    /// A transient failure.
    pub fn transient(code: &'static str, source: impl Into<anyhow::Error>) -> Self {
        Self::Transient {
            code,
            source: source.into(),
        }
    }

    /// A permanent failure.
    pub fn permanent(code: &'static str, source: impl Into<anyhow::Error>) -> Self {
        Self::Permanent {
            code,
            source: source.into(),
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Transient { code, .. }
            | Self::Permanent { code, .. }
            | Self::RateLimited { code, .. } => code,
        }
    }
}

impl From<sqlx::Error> for JobError {
    /// Database errors are transient unless they say the data itself is wrong: a constraint
    /// the row breaks, a value PostgreSQL cannot hold (SQLSTATE class 22: NUL in text, a time
    /// out of range, a number too large) or a limit it exceeds (class 54: an index key over
    /// 2,704 bytes). The same job would fail the same way on every attempt, so it goes to the
    /// dead letters at once, named, instead of after its retries as `db_error`.
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db)
                if db.is_check_violation() || db.is_foreign_key_violation() =>
            {
                Self::permanent("db_constraint", e)
            }
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("22") || c.starts_with("54")) =>
            {
                Self::permanent("db_invalid_data", e)
            }
            _ if leadq_platform::db::is_unavailable(&e) => Self::RateLimited {
                code: "db_unavailable",
                // Spread out, so jobs do not all come back at the same moment.
                retry_after: Duration::from_millis(2000 + rand::random::<u64>() % 3000),
            },
            _ => Self::transient("db_error", e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::JobError;

    /// A PostgreSQL error with just a SQLSTATE.
    #[derive(Debug)]
    struct Pg(&'static str);

    impl std::fmt::Display for Pg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Pg {}

    impl sqlx::error::DatabaseError for Pg {
        fn message(&self) -> &str {
            "test"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn class(sqlstate: &'static str) -> (&'static str, bool) {
        let e = JobError::from(sqlx::Error::Database(Box::new(Pg(sqlstate))));
        (e.code(), matches!(e, JobError::Permanent { .. }))
    }

    #[test]
    fn data_postgresql_cannot_hold_is_permanent_and_the_rest_is_transient() {
        // NUL in text, untranslatable character, time out of range, numeric out of range,
        // index row too large.
        for s in ["22021", "22P05", "22008", "22003", "54000"] {
            assert_eq!(class(s), ("db_invalid_data", true), "{s}");
        }
        // A unique violation can be a race another attempt settles; a serialization failure
        // or a deadlock is transient by nature.
        for s in ["23505", "40001", "40P01"] {
            assert_eq!(class(s), ("db_error", false), "{s}");
        }
    }
}
