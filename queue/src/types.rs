//! The values the engine takes and returns: jobs to enqueue, their results, counts, workers,
//! tenant standing and dead letters. Plain data, serialisable where operators see it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::envelope::Envelope;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The message.
    pub envelope: Envelope,
    /// Run no earlier than this; `None` runs it as soon as a worker is free.
    pub run_at: Option<DateTime<Utc>>,
    /// Order among the same tenant's ready jobs of the kind.
    pub priority: Priority,
}

impl NewJob {
    /// A normal-priority job to run as soon as a worker is free.
    pub fn now(envelope: Envelope) -> Self {
        Self {
            envelope,
            run_at: None,
            priority: Priority::Normal,
        }
    }
}

/// Where a job goes among *its own tenant's* ready jobs of a kind: a tenant's high-priority
/// jobs run before its normal ones, which run before its low ones; FIFO within a priority.
/// Priorities never change a tenant's share of the workers (fairness across tenants is by
/// weight alone), so no tenant can jump ahead of others by marking everything high.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Before the tenant's normal and low jobs.
    High,
    /// The default.
    #[default]
    Normal,
    /// After the tenant's other ready jobs.
    Low,
}

impl Priority {
    /// The digit the scripts order by.
    pub(crate) fn digit(self) -> &'static str {
        match self {
            Priority::High => "0",
            Priority::Normal => "1",
            Priority::Low => "2",
        }
    }

    /// Parses `high`, `normal` or `low`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }
}

/// A tenant's controls and standing in one kind's queue.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantState {
    /// Paused: none of its jobs start.
    pub paused: bool,
    /// Most of its jobs running at once across all workers (`None`: no cap).
    pub cap: Option<u32>,
    /// Its jobs running now (counted only while a cap is set).
    pub running: u64,
    /// Its ready jobs held back (paused, or waiting for room under the cap) whose slots are
    /// parked. A paused tenant's jobs are parked as their turn comes up, so right after a pause
    /// (or an enqueue while paused) some may still count in `backlog` only.
    pub held: u64,
    /// Its jobs waiting to start: ready or held (its entries in the `index`, which holds every
    /// ready job, parked or not, until a worker takes it). Not counted: running jobs, and
    /// scheduled ones (retries, rate-limited, future `run_at`) until they are due and promoted.
    pub backlog: u64,
    /// Its share of the workers relative to other tenants (default 1).
    pub weight: f64,
}

/// Completions of one kind per minute, summed over its shards (see [`Queue::completions`]).
///
/// [`Queue::completions`]: crate::Queue::completions
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Throughput {
    /// Jobs completed in each of the last `minutes` 60-second windows ending at Redis's clock
    /// now, oldest first; the last entry is the last 60 s.
    pub per_minute: Vec<u64>,
    /// False when completions inside the window may have been trimmed from the `done` set
    /// (`LEADQ_KEEP_DONE`, `LEADQ_KEEP_DONE_SECS`): the counts are then a lower bound.
    pub covered: bool,
}

/// A tenant's standing in one kind's queue, after a control was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantControl {
    /// Ready jobs moved back into the queue by this call.
    pub resumed: u64,
    /// Ready jobs of the tenant still held back (paused, or over its cap until its running
    /// jobs finish).
    pub held: u64,
}

/// The result of enqueueing one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The job's id (for a duplicate: the id of the job enqueued first).
    pub job_id: Uuid,
    /// The message id.
    pub message_id: String,
    /// True when the message id had been seen within the dedupe TTL and nothing was enqueued.
    pub duplicate: bool,
}

/// Job counts of one kind.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// The kind.
    pub kind: String,
    /// Ready to run.
    pub pending: u64,
    /// Ready but held back: their tenant is paused for the kind, or at its concurrency cap.
    pub held: u64,
    /// Waiting for a retry delay, a rate limit or a `run_at`.
    pub scheduled: u64,
    /// Leased by a worker.
    pub running: u64,
    /// Completed (lifetime counter).
    pub done: u64,
    /// Failed runs, retried or dead-lettered (lifetime counter).
    pub failed: u64,
    /// Dead letters currently kept.
    pub dead: u64,
    /// Retries scheduled (lifetime counter).
    pub retries: u64,
    /// Rate-limited runs (lifetime counter).
    pub rate_limited: u64,
    /// Jobs recovered from expired leases (lifetime counter).
    pub recovered: u64,
}

/// A worker process as it reports itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WorkerInfo {
    /// Unique per process start: `<host>-<pid>-<random>`.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Kinds this worker runs.
    pub kinds: Vec<String>,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// Jobs of this queue it holds leases on.
    pub in_flight: usize,
}

/// A worker's status across all kinds, as `/v1/status` shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerStatus {
    /// Worker id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Kinds it runs.
    pub kinds: Vec<String>,
    /// Process start.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat (Redis clock).
    pub last_heartbeat: DateTime<Utc>,
    /// Jobs leased, summed over kinds.
    pub in_flight: usize,
}

/// A dead-lettered job.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Job id.
    pub job_id: Uuid,
    /// Kind.
    pub kind: String,
    /// Why it died: a permanent error code, `max_attempts`, `poisoned`, `malformed_envelope`.
    pub reason: String,
    /// The last error code seen.
    pub last_error_code: String,
    /// Attempts used.
    pub attempts: u32,
    /// When it died.
    pub dead_at: DateTime<Utc>,
    /// The envelope as enqueued (`None` if it could not be parsed).
    pub envelope: Option<Envelope>,
}

/// What the worker did with one leased job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Completed.
    Completed,
    /// Failed transiently; runs again after `delay`.
    Retried {
        /// The backoff chosen.
        delay: Duration,
    },
    /// Dead-lettered.
    Dead {
        /// The reason.
        reason: String,
    },
    /// Rate-limited; runs again after `delay` without using an attempt.
    Snoozed {
        /// The delay.
        delay: Duration,
    },
    /// Handed back unfinished (shutdown).
    Released,
    /// The lease had expired and another worker took the job over; nothing was changed.
    Lost,
}
