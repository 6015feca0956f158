//! Our Redis backend for apalis-core 1.0, and the layer that settles every job.
//!
//! apalis drives [`RedisBackend`] through `poll_next` only when its service stack has room
//! (the concurrency limit is ready). Fetches run as tasks of their own, one at a time, and
//! lease the free capacity plus a prefetch (half the concurrency): the next one
//! starts while jobs are still buffered, so a freed slot rarely waits for a round trip, and
//! leases stay short. An idle backend blocks on the queue's wake list (with a short timeout,
//! which also paces the promotion of due retries), so a new job starts within milliseconds
//! without busy polling.
//!
//! [`AckLayer`] is the backend's own middleware, the outermost layer of every worker: it
//! classifies each run's result and settles the job (`ack.rs`). Acknowledgements of jobs that
//! finish together go to Redis as one script call (group commit, `settle.rs`). Settling is
//! retried through Redis outages; if it still cannot be done the lease expires and another
//! worker runs the job again (at-least-once). The job and observer types are in `job.rs`.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use futures::future::BoxFuture;
use futures::FutureExt;
use leadq_platform::metrics as m;
use uuid::Uuid;

pub use crate::ack::{AckLayer, AckService};
use crate::envelope::{Envelope, JobMeta};
pub use crate::job::{Job, JobObserver, JobReport, NoObserver, Rejection};
use crate::lease::LeaseOwner;
pub use crate::payload::{Payload, PayloadError};
use crate::settle::{redis_backoff, redis_error, redis_settle, settle_with_retry, Settler};
use crate::{Fetched, Leased, Queue, QueueError, Settle, Settled};
/// The leases one worker process holds for one kind: job id → (lease owner token, shard).
///
/// Shared by the backend (which adds a lease when it fetches), the ack layer (which removes it
/// when it settles), the upkeep loop (which renews them) and shutdown (which hands back what is
/// left), so no job is ever forgotten by its worker.
#[derive(Debug, Clone, Default)]
pub struct LeaseBook(Arc<Mutex<HashMap<String, (String, u16)>>>);

impl LeaseBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, u16)>> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, id: String, owner: String, shard: u16) {
        self.lock().insert(id, (owner, shard));
    }

    /// The shard a leased job came from.
    pub(crate) fn shard(&self, id: &str) -> u16 {
        self.lock().get(id).map_or(0, |(_, s)| *s)
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Forgets the lease `owner` held on `id`, and only that one: a run whose lease expired
    /// settles after the same job came back to this worker as a new attempt (another owner),
    /// and removing by id alone would drop the new lease from renewal mid-run.
    pub(crate) fn remove_lease(&self, id: &str, owner: &str) {
        let mut book = self.lock();
        if book.get(id).is_some_and(|(o, _)| o == owner) {
            book.remove(id);
        }
    }

    /// Number of leases held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A copy of the (job id, owner, shard) entries.
    pub fn snapshot(&self) -> Vec<(String, String, u16)> {
        self.lock()
            .iter()
            .map(|(k, (o, s))| (k.clone(), o.clone(), *s))
            .collect()
    }
}

/// What the backend needs to run one kind in one worker process.
#[derive(Clone)]
pub struct KindRunner {
    pub(crate) queue: Queue,
    pub(crate) kind: &'static str,
    pub(crate) worker_id: Arc<str>,
    pub(crate) concurrency: usize,
    pub(crate) book: LeaseBook,
    pub(crate) observer: Arc<dyn JobObserver>,
    /// One blocking connection per kind and process, made on first need.
    wake: Arc<tokio::sync::Mutex<Option<crate::Conn>>>,
    /// The shard the next fetch starts at: fetches go round the shards.
    next_shard: Arc<std::sync::atomic::AtomicU16>,
    /// Numbers this process's fetches of the kind: part of each lease's owner token.
    fetches: Arc<AtomicU64>,
    /// Fetches sent whose reply has not been read (yet, or ever: the connection failed after
    /// Redis ran the script, or the fetch was dropped): (shard, fetch number). Their leases
    /// are in no book; they are handed back before the next fetch (`release_unanswered`).
    unanswered: Arc<Mutex<Vec<(u16, u64)>>>,
    /// The kind's group-commit settler, started on first need (see `settle.rs`).
    settler: Arc<std::sync::OnceLock<Settler>>,
    /// Jobs of the book whose handler is done and whose settlement is on its way: they hold
    /// leases but no longer a slot, so they do not count against the prefetch.
    pub(crate) settling: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for KindRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindRunner")
            .field("kind", &self.kind)
            .field("worker_id", &self.worker_id)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl KindRunner {
    /// Prepares `kind` for the worker `worker_id` with `concurrency` jobs at once.
    pub fn new(
        queue: Queue,
        kind: &'static str,
        worker_id: &str,
        concurrency: usize,
        observer: Arc<dyn JobObserver>,
    ) -> Self {
        Self {
            queue,
            kind,
            worker_id: worker_id.into(),
            concurrency: concurrency.max(1),
            book: LeaseBook::default(),
            observer,
            wake: Arc::default(),
            next_shard: Arc::default(),
            fetches: Arc::default(),
            unanswered: Arc::default(),
            settler: Arc::default(),
            settling: Arc::default(),
        }
    }

    /// Settles one finished job through the kind's settler, which groups the acknowledgements
    /// of jobs finishing together into one script call. `None`: it could not be settled within
    /// `patience` (the lease will expire and the job runs again).
    pub(crate) async fn settle_one(
        &self,
        id: String,
        owner: String,
        how: Settle,
    ) -> Option<Settled> {
        let settler = self
            .settler
            .get_or_init(|| Settler::start(redis_settle(self.queue.clone(), self.kind)));
        let shard = self.book.shard(&id);
        settler.settle(shard, (id, owner, how)).await
    }

    /// The kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The leases this process holds for the kind.
    pub fn book(&self) -> &LeaseBook {
        &self.book
    }

    /// A fresh backend for one apalis worker (called again on every restart of that worker).
    pub fn backend<P>(&self) -> RedisBackend<P> {
        RedisBackend {
            runner: self.clone(),
            buffer: VecDeque::new(),
            fetching: None,
            drained: None,
            closing: Arc::new(AtomicBool::new(false)),
            release: None,
            _payload: PhantomData,
        }
    }

    /// Hands every job this process still leases for the kind back to the queue, without using
    /// an attempt. Called at shutdown once in-flight jobs had their chance to finish. It sweeps
    /// by lease owner in Redis rather than trusting the local book alone, so a lease taken by a
    /// fetch whose reply was never read (the worker was dropped mid-fetch) is handed back too.
    pub async fn release_all(&self) -> u64 {
        let mut backoff = redis_backoff();
        let start = Instant::now();
        loop {
            match self.queue.release_owned(self.kind, &self.worker_id).await {
                Ok(n) => {
                    for (id, _, _) in self.book.snapshot() {
                        self.book.remove(&id);
                    }
                    return n;
                }
                Err(error) => {
                    redis_error("release", &error);
                    if start.elapsed() > Duration::from_secs(5) {
                        // `code`: a dependency down, so the error alert is critical.
                        tracing::error!(kind = self.kind, error = %error, code = "redis_unavailable",
                            "Could not hand jobs back; they run again when their leases expire.");
                        return 0;
                    }
                    tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(1))).await;
                }
            }
        }
    }

    /// Leases up to `want` jobs, waiting (in short blocking waits) until there is at least one
    /// or `closing` is set. Redis errors are retried with backoff, never returned. After a
    /// fetch that drained the queue (`drained`), waits for a wake-up first: at low load that
    /// saves a fetch that would find nothing, one round trip per job or so.
    async fn fetch_some(
        self,
        want: usize,
        closing: Arc<AtomicBool>,
        drained: Option<Drained>,
    ) -> (Vec<Leased>, Option<Drained>) {
        if let Some(Drained { due_in }) = drained {
            self.wait_for_work(due_in).await;
        }
        let mut backoff = redis_backoff();
        loop {
            if closing.load(Ordering::Acquire) {
                return (Vec::new(), None);
            }
            if let Err(error) = self.release_unanswered().await {
                redis_error("release", &error);
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
                continue;
            }
            match self.fetch_round(want).await {
                Ok(Fetched {
                    jobs,
                    drained,
                    due_in,
                }) if !jobs.is_empty() => {
                    return (jobs, drained.then_some(Drained { due_in }));
                }
                Ok(Fetched { due_in, .. }) => {
                    backoff = redis_backoff();
                    self.wait_for_work(due_in).await;
                }
                Err(error) => {
                    redis_error("fetch", &error);
                    tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
                }
            }
        }
    }

    fn unanswered_lock(&self) -> std::sync::MutexGuard<'_, Vec<(u16, u64)>> {
        self.unanswered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands back the jobs leased by this process's fetches whose replies were never read:
    /// nothing would run them until their leases expired, and then as suspects, one at a time,
    /// each with an attempt and a lease expiry counted against it. A fetch that Redis never
    /// ran leases nothing, and handing it back finds nothing.
    async fn release_unanswered(&self) -> Result<(), QueueError> {
        let pending = self.unanswered_lock().clone();
        for (shard, no) in pending {
            let n = self
                .queue
                .release_fetch(self.kind, shard, &self.worker_id, no)
                .await?;
            self.unanswered_lock().retain(|&f| f != (shard, no));
            if n > 0 {
                tracing::warn!(
                    kind = self.kind,
                    shard,
                    jobs = n,
                    "Handed back the jobs of a fetch whose reply was lost; they run again now."
                );
            }
        }
        Ok(())
    }

    /// One fetch from each shard in turn, starting after the shard served last, until one has
    /// jobs. With no jobs anywhere, the earliest due time of a scheduled job over all shards.
    /// Only a queue of one shard is ever reported drained while it returns jobs: with more,
    /// the shards not asked may hold some.
    async fn fetch_round(&self, want: usize) -> Result<Fetched, QueueError> {
        let n = self.queue.shards().end;
        let start = self.next_shard.fetch_add(1, Ordering::Relaxed) % n;
        let mut due: Option<Duration> = None;
        for i in 0..n {
            let shard = (start + i) % n;
            let no = self.fetches.fetch_add(1, Ordering::Relaxed);
            self.unanswered_lock().push((shard, no));
            let mut fetched = self
                .queue
                .fetch(self.kind, shard, &self.worker_id, no, want)
                .await?;
            // Read: its leases go in the book at once, with no await in between, so a dropped
            // fetch leaves them either unanswered or booked, never neither.
            for job in &fetched.jobs {
                self.book
                    .insert(job.id.clone(), job.owner.clone(), job.shard);
            }
            self.unanswered_lock().retain(|&f| f != (shard, no));
            if !fetched.jobs.is_empty() {
                fetched.drained &= n == 1;
                return Ok(fetched);
            }
            due = match (due, fetched.due_in) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(Fetched {
            jobs: Vec::new(),
            drained: true,
            due_in: due,
        })
    }

    /// Turns a leased job into a task, or dead-letters it when it is not a genuine, readable
    /// job of this kind. The signature is checked first: nothing in an unverified envelope is
    /// acted on. The payload is read for the envelope's `schema_version` ([`Payload`]): a
    /// version this build does not read is dead-lettered `unsupported_version`, for re-drive
    /// once workers that read it are deployed.
    fn decode<P: Payload>(&self, leased: Leased) -> Option<Task<Job<P>>> {
        let kind = self.kind;
        let parsed = self
            .queue
            .signer()
            .verify(&leased.data)
            .map_err(|e| ("bad_signature", e.to_string()))
            .and_then(|value| {
                let env = serde_json::from_value::<Envelope>(value)
                    .map_err(|e| ("malformed_envelope", e.to_string()))?;
                if env.action != kind {
                    return Err(("wrong_kind", format!("action {:?}", env.action)));
                }
                let job_id = leased
                    .id
                    .parse::<Uuid>()
                    .map_err(|e| ("bad_job_id", e.to_string()))?;
                let payload = P::from_versioned(env.schema_version, env.payload)
                    .map_err(|e| (e.reason(), e.to_string()))?;
                Ok(Job {
                    meta: JobMeta {
                        job_id,
                        attempt: leased.attempt,
                        schema_version: env.schema_version,
                        message_id: env.message_id,
                        tenant_id: env.tenant_id,
                        user_id: env.user_id,
                        action: env.action,
                        timestamp: env.timestamp,
                        correlation_id: env.correlation_id,
                        trace_context: env.trace_context,
                        shadow: false,
                    },
                    payload,
                })
            });
        match parsed {
            Ok(job) => {
                let mut task = Task::new(job);
                task.inject_data(LeaseOwner(leased.owner));
                if let Some(due) = leased.due {
                    task.inject_data(due);
                }
                Some(task)
            }
            Err((reason, detail)) => {
                tracing::error!(kind, job_id = %leased.id, reason, detail, alerted = true,
                    "Dead-lettering a job that is not a genuine, readable job of this kind.");
                metrics::counter!(m::JOBS_TOTAL, m::label::KIND => kind,
                    m::label::OUTCOME => m::outcome::DEAD)
                .increment(1);
                if reason == "bad_signature" {
                    metrics::counter!(m::SECURITY_EVENTS_TOTAL, m::label::KIND => reason)
                        .increment(1);
                }
                let claimed_tenant = serde_json::from_str::<serde_json::Value>(&leased.data)
                    .ok()
                    .and_then(|v| v.get("tenant_id")?.as_str()?.parse().ok());
                let runner = self.clone();
                tokio::spawn(async move {
                    let how = Settle::Dead {
                        reason: reason.into(),
                        code: reason.into(),
                    };
                    let entries = [(leased.id.clone(), leased.owner.clone(), how)];
                    settle_with_retry(
                        &runner.queue,
                        runner.kind,
                        leased.shard,
                        &entries,
                        Duration::from_secs(30),
                    )
                    .await;
                    runner.book.remove_lease(&leased.id, &entries[0].1);
                    runner
                        .observer
                        .rejected(Rejection {
                            job_id: leased.id,
                            kind: runner.kind,
                            reason,
                            claimed_tenant,
                        })
                        .await;
                });
                None
            }
        }
    }

    /// Blocks on the wake list until a producer signals new work, the next scheduled job is
    /// due (`due_in`), or half a second passes (a safety net for missed signals).
    async fn wait_for_work(&self, due_in: Option<Duration>) {
        let wait = due_in
            .unwrap_or(IDLE_WAIT)
            .clamp(Duration::from_millis(10), IDLE_WAIT);
        let mut slot = self.wake.lock().await;
        if slot.is_none() {
            match self.queue.blocking_connection().await {
                Ok(c) => *slot = Some(c),
                Err(error) => {
                    redis_error("connect", &error);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return;
                }
            }
        }
        if let Some(conn) = slot.as_mut() {
            // Producers wake shard 0's list whatever shard their jobs went to.
            let keys = self.queue.keys(self.kind, 0);
            let res: Result<Option<(String, String)>, _> = redis::cmd("BLPOP")
                .arg(&keys.wake)
                .arg(wait.as_secs_f64())
                .query_async(conn)
                .await;
            if let Err(error) = res {
                redis_error("wait", &QueueError::from(error));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// What a fetch task hands the backend: the jobs, decoded, and whether the fetch drained the
/// queue.
type Batch<P> = (Vec<Task<Job<P>>>, Option<Drained>);

/// A fetch that took the last ready job: the next one waits for a wake-up first, at most
/// until the earliest scheduled job is due.
#[derive(Debug, Clone, Copy)]
struct Drained {
    due_in: Option<Duration>,
}

/// Jobs leased ahead of free slots: concurrency / this (rounded up). Enough that the buffer
/// outlasts a fetch's round trip at full speed (a 5 ms drain at C=50 reached 9,533 jobs/s
/// mean over six runs with C/2, against 9,464 with C/4); small enough that a dead worker
/// strands few jobs until their leases expire, and other workers still get their share.
const PREFETCH_DIVISOR: usize = 2;

/// The longest an idle worker waits before it looks again.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// The apalis backend of one kind, generic over the kind's payload type.
pub struct RedisBackend<P> {
    runner: KindRunner,
    buffer: VecDeque<Task<Job<P>>>,
    /// The fetch under way, a task of its own so that it runs while every slot is busy.
    fetching: Option<tokio::task::JoinHandle<Batch<P>>>,
    /// Set when the last fetch drained the queue: the next one waits for a wake-up first.
    drained: Option<Drained>,
    closing: Arc<AtomicBool>,
    release: Option<BoxFuture<'static, ()>>,
    _payload: PhantomData<fn() -> P>,
}

impl<P> std::fmt::Debug for RedisBackend<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("runner", &self.runner)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl<P> Drop for RedisBackend<P> {
    fn drop(&mut self) {
        // A worker restarted or dropped mid-fetch: that fetch stays unanswered, and the next
        // backend of the kind hands its leases back before its own first fetch
        // (`release_unanswered`); `release_all` at shutdown, or their expiry, catch the rest.
        if let Some(fetch) = self.fetching.take() {
            fetch.abort();
        }
    }
}

impl<P: Payload + Send + 'static> RedisBackend<P> {
    /// Starts a fetch when none is under way and there is room for a worthwhile batch: the
    /// buffer is empty, or at least half a prefetch of leases is free. So the next jobs are
    /// usually at hand before the buffer runs dry, and a freed slot does not wait for a round
    /// trip (apalis asks for a task only when a slot is free, one at a time).
    fn refill(&mut self) {
        if self.fetching.is_some() || self.closing.load(Ordering::Acquire) {
            return;
        }
        // Room: the concurrency plus a small prefetch, less the leases held by running and
        // buffered jobs (those being settled hold no slot: their handler is done).
        let c = self.runner.concurrency;
        let prefetch = c.div_ceil(PREFETCH_DIVISOR);
        let held = self
            .runner
            .book
            .len()
            .saturating_sub(self.runner.settling.load(Ordering::Relaxed));
        let room = (c + prefetch).saturating_sub(held);
        if !self.buffer.is_empty() && room < prefetch.div_ceil(2) {
            return;
        }
        let (runner, closing, drained) = (
            self.runner.clone(),
            self.closing.clone(),
            self.drained.take(),
        );
        // Decoded (signature checked, JSON parsed) in the fetch's task too, off the worker's.
        let fetch = async move {
            let (batch, drained) = runner
                .clone()
                .fetch_some(room.max(1), closing, drained)
                .await;
            let tasks = batch
                .into_iter()
                .filter_map(|leased| runner.decode(leased))
                .collect();
            (tasks, drained)
        };
        self.fetching = Some(tokio::spawn(fetch));
    }
}

impl<P: Payload + Send + 'static> Backend for RedisBackend<P> {
    type Task = Task<Job<P>>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            self.refill();
            if let Some(fetch) = self.fetching.as_mut() {
                if let Poll::Ready(done) = fetch.poll_unpin(cx) {
                    self.fetching = None;
                    // A fetch task only fails by panicking; its leases expire.
                    let (tasks, drained) = done.unwrap_or_default();
                    self.buffer.extend(tasks);
                    self.drained = drained;
                    continue;
                }
            }
            if let Some(task) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task)));
            }
            return if self.fetching.is_some() {
                Poll::Pending
            } else {
                // Nothing buffered and no fetch: only when closing. The stream ends.
                Poll::Ready(None)
            };
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.closing.store(true, Ordering::Release);
        if let Some(fetch) = self.fetching.as_mut() {
            match fetch.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(done) => {
                    self.fetching = None;
                    self.buffer.extend(done.unwrap_or_default().0);
                }
            }
        }
        if self.release.is_none() {
            // Fetched but never started: hand them straight back, without using an attempt.
            let mut by_shard: std::collections::BTreeMap<u16, Vec<_>> =
                std::collections::BTreeMap::new();
            for t in self.buffer.drain(..) {
                let id = t.args.meta.job_id.to_string();
                by_shard
                    .entry(self.runner.book.shard(&id))
                    .or_default()
                    .push((id, LeaseOwner::of(&t), Settle::Release));
            }
            let runner = self.runner.clone();
            self.release = Some(
                async move {
                    for (shard, entries) in by_shard {
                        settle_with_retry(
                            &runner.queue,
                            runner.kind,
                            shard,
                            &entries,
                            Duration::from_secs(5),
                        )
                        .await;
                        for (id, owner, _) in &entries {
                            runner.book.remove_lease(id, owner);
                        }
                    }
                }
                .boxed(),
            );
        }
        match self.release.as_mut().map(|f| f.poll_unpin(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl<P> BackendConfig for RedisBackend<P> {
    type Args = Job<P>;
    type Id = Uuid;
    type Kind = apalis_core::backend::finalize::Ephemeral;
    type Config = ();
    type Layer = AckLayer;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        AckLayer::new(self.runner.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::LeaseBook;

    #[test]
    fn a_stale_runs_settle_keeps_the_jobs_newer_lease() {
        let book = LeaseBook::default();
        book.insert("j".into(), "w:1".into(), 3);
        // The lease expired and the reaper gave the job back; this worker fetched it again.
        book.insert("j".into(), "w:2".into(), 3);
        // Attempt 1 ends now: its settle must not drop attempt 2 from renewal.
        book.remove_lease("j", "w:1");
        assert_eq!(book.len(), 1);
        assert_eq!(book.shard("j"), 3);
        book.remove_lease("j", "w:2");
        assert!(book.is_empty());
    }
}
