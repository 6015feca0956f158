//! The job as a handler sees it, and the observer hooks around every run.
//!
//! Plain types shared by the backend, the ack layer, the worker's `job_runs` recorder and the
//! bench: what a handler receives ([`Job`]), what a run came to ([`JobReport`]), and a fetched
//! job refused before any handler saw it ([`Rejection`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use uuid::Uuid;

use crate::envelope::JobMeta;
use crate::Settled;

/// A job as a handler receives it: what the envelope says, and the typed payload.
#[derive(Debug, Clone)]
pub struct Job<P> {
    /// Ids, tenant, actor, correlation id, attempt.
    pub meta: JobMeta,
    /// The kind-specific payload.
    pub payload: P,
}

/// What happened to one run of a job, reported to the [`JobObserver`].
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The job.
    pub meta: JobMeta,
    /// What the queue did with it.
    pub settled: Settled,
    /// The error code of a failed run.
    pub error_code: Option<&'static str>,
    /// When the job was last due: its enqueue, the `run_at` it was enqueued with, or the end
    /// of a rate-limit snooze. A first attempt's wait (`leadq_job_wait_seconds`) runs from here
    /// to `started_at`.
    pub due_at: DateTime<Utc>,
    /// When its turnaround (`leadq_job_turnaround_seconds`, the job SLA) started: its enqueue,
    /// the `run_at` it was enqueued with, or a re-drive; a snooze is part of it.
    pub since: DateTime<Utc>,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Handler run time.
    pub duration: Duration,
}

/// Hooks around every run, for the records that live outside Redis (`job_runs`, audit) and
/// for benchmarks and tests that wait for completions instead of sleeping.
pub trait JobObserver: Send + Sync + 'static {
    /// A run is about to start.
    fn started(&self, meta: &JobMeta) -> BoxFuture<'static, ()>;
    /// A run ended and its job is settled in Redis (`report.settled`).
    fn finished(&self, report: JobReport) -> BoxFuture<'static, ()>;
    /// A fetched job was refused before any handler saw it, and dead-lettered.
    fn rejected(&self, _rejection: Rejection) -> BoxFuture<'static, ()> {
        futures::future::ready(()).boxed()
    }
}

/// A fetched job the backend refused to run (it never reached a handler).
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The job id.
    pub job_id: String,
    /// The queue it came from.
    pub kind: &'static str,
    /// Why: `bad_signature`, `malformed_envelope`, `wrong_kind`, `malformed_payload`,
    /// `unsupported_version`, …
    pub reason: &'static str,
    /// The tenant the envelope claims, when it could be read. Unverified: never act on it.
    pub claimed_tenant: Option<Uuid>,
}

/// An observer that does nothing.
#[derive(Debug, Clone, Copy)]
pub struct NoObserver;

impl JobObserver for NoObserver {
    fn started(&self, _: &JobMeta) -> BoxFuture<'static, ()> {
        futures::future::ready(()).boxed()
    }
    fn finished(&self, _: JobReport) -> BoxFuture<'static, ()> {
        futures::future::ready(()).boxed()
    }
}
