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
    /// Database errors are transient unless they say the data itself is wrong.
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db)
                if db.is_check_violation() || db.is_foreign_key_violation() =>
            {
                Self::permanent("db_constraint", e)
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
