//! The ack layer: the backend's own middleware, the outermost layer of every worker.
//!
//! It sees the handler's typed error, classifies it ([`crate::JobError`]: transient → retry,
//! permanent → dead letter, rate-limited → snooze; a timeout or an untyped error → retry),
//! settles the job through the kind's settler, emits the job metrics and logs, and tells the
//! [`JobObserver`](crate::JobObserver).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use leadq_platform::metrics as m;
use leadq_platform::telemetry::{self, trace};
use tracing::Instrument;

use crate::backend::KindRunner;
use crate::error::JobError;
use crate::job::{Job, JobReport};
use crate::lease::{DueMark, LeaseOwner};
use crate::{Settle, Settled};

/// The backend's middleware: classifies and settles every job. See the module docs.
#[derive(Debug, Clone)]
pub struct AckLayer {
    runner: KindRunner,
}

impl AckLayer {
    /// The ack layer of `runner`'s kind.
    pub(crate) fn new(runner: KindRunner) -> Self {
        Self { runner }
    }
}

impl<S> tower::Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AckService {
            inner,
            runner: self.runner.clone(),
        }
    }
}

/// See [`AckLayer`].
#[derive(Debug, Clone)]
pub struct AckService<S> {
    inner: S,
    runner: KindRunner,
}

/// The longest a rate-limited job waits before it runs again, whatever its handler asked: a
/// wait read from a downstream's header (`Retry-After: 99999999999`) must not park a job for
/// centuries without a dead letter or an alert. A day covers every wait leadq asks for itself
/// (a CRM's daily limit waits until the next UTC midnight); a job that still may not run then
/// asks again.
pub(crate) const MAX_SNOOZE: Duration = Duration::from_secs(24 * 3600);

/// How a handler result is to be settled, and its error code.
fn classify(result: &Result<(), BoxDynError>) -> (Settle, Option<&'static str>) {
    let Err(error) = result else {
        return (Settle::Ok, None);
    };
    if let Some(e) = error.downcast_ref::<JobError>() {
        let code = e.code();
        let how = match e {
            JobError::Transient { .. } => Settle::Retry { code: code.into() },
            JobError::Permanent { .. } => Settle::Dead {
                reason: code.into(),
                code: code.into(),
            },
            JobError::RateLimited { retry_after, .. } => Settle::Snooze {
                delay: (*retry_after).min(MAX_SNOOZE),
                code: code.into(),
            },
        };
        return (how, Some(code));
    }
    let code = if error.is::<tower::timeout::error::Elapsed>() {
        "timeout"
    } else {
        "handler_error"
    };
    (Settle::Retry { code: code.into() }, Some(code))
}

impl<S, P, R> tower::Service<Task<Job<P>>> for AckService<S>
where
    S: tower::Service<Task<Job<P>>, Response = R>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
    P: Send + 'static,
{
    type Response = Settled;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<Settled, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Job<P>>) -> Self::Future {
        let meta = task.args.meta.clone();
        let lease = LeaseOwner::of(&task);
        // The job's wait starts when it was due: its enqueue, its `run_at`, the end of a
        // rate-limit snooze (which gives its attempt back, so its next run is a first attempt
        // again, and a CRM's daily limit would count as hours of waiting) or a re-drive. Its
        // turnaround starts at its enqueue, its `run_at` or a re-drive: a delay it was enqueued
        // with is not lateness, a snooze is.
        let mark = task.ctx().data().get::<DueMark>().copied();
        let due_at = mark.map_or(meta.timestamp, |d| d.due.max(meta.timestamp));
        let since = mark
            .and_then(|d| d.since)
            .map_or(meta.timestamp, |s| s.max(meta.timestamp));
        let runner = self.runner.clone();
        let kind = runner.kind;
        // `process <kind>` (OpenTelemetry messaging): each run continues the trace of the
        // `send` that enqueued the job and links to it, so the retries of one job are siblings
        // under one creation context.
        let span = tracing::info_span!("job",
            otel.name = %format_args!("process {kind}"),
            otel.kind = "consumer",
            messaging.system = "leadq",
            messaging.operation.type = "process",
            messaging.destination.name = kind,
            messaging.message.id = %meta.message_id,
            kind,
            job_id = %meta.job_id,
            attempt = meta.attempt,
            tenant_id = %meta.tenant_id,
            correlation_id = %meta.correlation_id,
            message_id = %meta.message_id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let remote = trace::context_from(&meta.trace_context.clone().into_iter().collect());
        if let Some(remote) = remote {
            trace::continue_from(&span, remote, true);
        }
        trace::record_ids(&span);
        let inner = span.in_scope(|| self.inner.call(task));
        let tags = [
            ("kind", kind.to_owned()),
            ("job_id", meta.job_id.to_string()),
            ("attempt", meta.attempt.to_string()),
            ("tenant_id", meta.tenant_id.to_string()),
            ("correlation_id", meta.correlation_id.clone()),
        ];
        let job = async move {
            let phase = |p: &'static str, since: Instant| {
                metrics::histogram!(m::JOB_PHASE_SECONDS, m::label::KIND => kind,
                    m::label::PHASE => p)
                .record(since.elapsed().as_secs_f64());
            };
            let clock = Instant::now();
            runner.observer.started(&meta).await;
            phase(m::phase::RECORD_START, clock);
            let started_at = Utc::now();
            if meta.attempt == 1 {
                let wait = (started_at - due_at).to_std().unwrap_or_default();
                metrics::histogram!(m::JOB_WAIT_SECONDS, m::label::KIND => kind)
                    .record(wait.as_secs_f64());
            }
            let clock = Instant::now();
            let result = inner.await.map(|_| ()).map_err(Into::into);
            let duration = clock.elapsed();
            phase(m::phase::RUN, clock);
            metrics::histogram!(m::JOB_DURATION_SECONDS, m::label::KIND => kind)
                .record(duration.as_secs_f64());
            let (how, error_code) = classify(&result);
            if let Err(error) = &result {
                tracing::warn!(error = %error, error.cause_chain = %cause_chain(error.as_ref()),
                    code = error_code, "Job run failed.");
            }
            let id = meta.job_id.to_string();
            let settling = Settling::start(&runner.settling);
            let clock = Instant::now();
            let settled = runner
                .settle_one(id.clone(), lease.clone(), how)
                .await
                .unwrap_or(Settled::Lost);
            runner.book.remove_lease(&id, &lease);
            drop(settling);
            phase(m::phase::SETTLE, clock);
            record_outcome(kind, &settled, error_code);
            if matches!(settled, Settled::Completed | Settled::Dead { .. }) {
                // The job SLA: from its enqueue (or its `run_at`, or a re-drive) to its end,
                // across every attempt and delay.
                let turnaround = (Utc::now() - since).to_std().unwrap_or_default();
                metrics::histogram!(m::JOB_TURNAROUND_SECONDS, m::label::KIND => kind)
                    .record(turnaround.as_secs_f64());
            }
            let clock = Instant::now();
            runner
                .observer
                .finished(JobReport {
                    meta,
                    settled: settled.clone(),
                    error_code,
                    due_at,
                    since,
                    started_at,
                    duration,
                })
                .await;
            phase(m::phase::RECORD_END, clock);
            Ok(settled)
        };
        // One Sentry hub per run: its events carry the job's tags, never another job's.
        telemetry::with_own_hub(&tags, job.instrument(span)).boxed()
    }
}

/// Counts a job as being settled while it lives (also when its future is dropped midway).
struct Settling(Arc<std::sync::atomic::AtomicUsize>);

impl Settling {
    fn start(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// "outer: inner: innermost", for logs (never sent to clients).
fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

fn record_outcome(kind: &'static str, settled: &Settled, code: Option<&'static str>) {
    let outcome = match settled {
        Settled::Completed => m::outcome::COMPLETED,
        Settled::Retried { delay } => {
            metrics::counter!(m::JOB_RETRIES_TOTAL, m::label::KIND => kind).increment(1);
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                code,
                "Job will be retried."
            );
            m::outcome::RETRIED
        }
        Settled::Dead { reason } => {
            // `alerted`: the worker's observer sends the dead letter's own alert.
            tracing::error!(reason = %reason, code, alerted = true, "Job dead-lettered.");
            m::outcome::DEAD
        }
        Settled::Snoozed { delay } => {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                code,
                "Job rate-limited; will run later."
            );
            m::outcome::RATE_LIMITED
        }
        Settled::Released => return,
        Settled::Lost => {
            metrics::counter!(m::QUEUE_LOST_LEASES_TOTAL, m::label::KIND => kind).increment(1);
            tracing::warn!("Job's lease was lost before it was settled; it may run again.");
            return;
        }
    };
    metrics::counter!(m::JOBS_TOTAL, m::label::KIND => kind, m::label::OUTCOME => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests;
