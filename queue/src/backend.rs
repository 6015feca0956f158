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
//! [`AckLayer`] is the backend's own middleware, the outermost layer of every worker: it sees
//! the handler's typed error, classifies it ([`crate::JobError`]), settles the job in Redis
//! (complete, retry, dead-letter, snooze), emits the job metrics and tells the
//! [`JobObserver`]. Acknowledgements of jobs that finish together go to Redis as one script
//! call (group commit, see [`Settler`]). Settling is retried through Redis outages; if it still
//! cannot be done the lease expires and another worker runs the job again (at-least-once).

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use leadq_platform::metrics as m;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use uuid::Uuid;

use super::{Fetched, Leased, Queue, QueueError, Settle, Settled};
use crate::envelope::{Envelope, JobMeta};
use crate::error::JobError;

/// A job as a handler receives it: what the envelope says, and the typed payload.
#[derive(Debug, Clone)]
pub struct Job<P> {
    /// Ids, tenant, actor, correlation id, attempt.
    pub meta: JobMeta,
    /// The kind-specific payload.
    pub payload: P,
}

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

/// What happened to one run of a job, reported to the [`JobObserver`].
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The job.
    pub meta: JobMeta,
    /// What the queue did with it.
    pub settled: Settled,
    /// The error code of a failed run.
    pub error_code: Option<&'static str>,
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
    /// Why: `bad_signature`, `malformed_envelope`, `wrong_kind`, …
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
    wake: Arc<tokio::sync::Mutex<Option<super::Conn>>>,
    /// The shard the next fetch starts at: fetches go round the shards.
    next_shard: Arc<std::sync::atomic::AtomicU16>,
    /// The kind's group-commit settler, started on first need (see [`Settler`]).
    settler: Arc<std::sync::OnceLock<Settler>>,
    /// Jobs of the book whose handler is done and whose settlement is on its way: they hold
    /// leases but no longer a slot, so they do not count against the prefetch.
    settling: Arc<std::sync::atomic::AtomicUsize>,
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
            settler: Arc::default(),
            settling: Arc::default(),
        }
    }

    /// Settles one finished job through the kind's settler, which groups the acknowledgements
    /// of jobs finishing together into one script call. `None`: it could not be settled within
    /// `patience` (the lease will expire and the job runs again).
    async fn settle_one(&self, id: String, owner: String, how: Settle) -> Option<Settled> {
        let settler = self
            .settler
            .get_or_init(|| Settler::start(self.queue.clone(), self.kind));
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
                        tracing::error!(kind = self.kind, error = %error,
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
            match self.fetch_round(want).await {
                Ok(Fetched {
                    jobs,
                    drained,
                    due_in,
                }) if !jobs.is_empty() => {
                    for job in &jobs {
                        self.book.insert(
                            job.id.clone(),
                            owner(&self.worker_id, job.attempt),
                            job.shard,
                        );
                    }
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
            let mut fetched = self
                .queue
                .fetch(self.kind, shard, &self.worker_id, want)
                .await?;
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
    /// acted on.
    fn decode<P: DeserializeOwned>(&self, leased: Leased) -> Option<Task<Job<P>>> {
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
                let payload = serde_json::from_value::<P>(env.payload)
                    .map_err(|e| ("malformed_payload", e.to_string()))?;
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
                        shadow: false,
                    },
                    payload,
                })
            });
        match parsed {
            Ok(job) => Some(Task::new(job)),
            Err((reason, detail)) => {
                tracing::error!(kind, job_id = %leased.id, reason, detail,
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
                    let owner = owner(&runner.worker_id, leased.attempt);
                    let how = Settle::Dead {
                        reason: reason.into(),
                        code: reason.into(),
                    };
                    let entries = [(leased.id.clone(), owner, how)];
                    settle_with_retry(
                        &runner.queue,
                        runner.kind,
                        leased.shard,
                        &entries,
                        Duration::from_secs(30),
                    )
                    .await;
                    runner.book.remove(&leased.id);
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

fn owner(worker: &str, attempt: u32) -> String {
    format!("{worker}:{attempt}")
}

fn redis_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

pub(crate) fn redis_error(op: &'static str, error: &QueueError) {
    metrics::counter!(m::QUEUE_REDIS_ERRORS_TOTAL, m::label::OP => op).increment(1);
    tracing::warn!(op, error = %error, "Queue operation failed; retrying.");
}

/// Settles entries, retrying Redis errors with backoff for up to `patience`.
/// `None` means it could not be done: the leases will expire and the jobs run again.
pub(crate) async fn settle_with_retry(
    queue: &Queue,
    kind: &str,
    shard: u16,
    entries: &[(String, String, Settle)],
    patience: Duration,
) -> Option<Vec<Settled>> {
    let start = Instant::now();
    let mut backoff = redis_backoff();
    loop {
        match queue.settle(kind, shard, entries).await {
            Ok(r) => return Some(r),
            Err(error) => {
                redis_error("ack", &error);
                if start.elapsed() >= patience {
                    tracing::error!(kind, error = %error,
                        "Could not settle jobs; their leases will expire and they will run again.");
                    return None;
                }
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
            }
        }
    }
}

/// Most acknowledgements one settle script call carries.
const SETTLE_BATCH: usize = 256;
/// Settle calls a kind may have on their way to Redis at once.
const SETTLE_LOOPS: usize = 2;

type SettleRequest = (
    u16,
    (String, String, Settle),
    tokio::sync::oneshot::Sender<Option<Settled>>,
);

/// Group commit for acknowledgements. Every finished job of a kind in this process hands its
/// settle entry to one task, which sends whatever has gathered while its previous call was in
/// flight as one script call. A lone job is settled at once (no timer, no added latency);
/// under load, jobs finishing together share a round trip and the script's fixed cost, which
/// is what bounds a queue's jobs/s and Redis commands per job.
#[derive(Debug)]
struct Settler {
    tx: tokio::sync::mpsc::UnboundedSender<SettleRequest>,
}

impl Settler {
    fn start(queue: Queue, kind: &'static str) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<SettleRequest>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        // Two loops: while one batch is on its way to Redis, the next one gathers and goes,
        // so a job finishing just after a batch left does not wait for that batch's round trip.
        for _ in 0..SETTLE_LOOPS {
            let (queue, rx) = (queue.clone(), rx.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(SETTLE_BATCH);
                loop {
                    // Ends when every sender is gone: the kind's runner was dropped.
                    if rx.lock().await.recv_many(&mut batch, SETTLE_BATCH).await == 0 {
                        return;
                    }
                    settle_batch(&queue, kind, &mut batch).await;
                }
            });
        }
        Self { tx }
    }

    async fn settle(&self, shard: u16, entry: (String, String, Settle)) -> Option<Settled> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx.send((shard, entry, reply)).ok()?;
        answer.await.ok().flatten()
    }
}

/// Settles a gathered batch: one script call per shard among its entries.
async fn settle_batch(queue: &Queue, kind: &str, batch: &mut Vec<SettleRequest>) {
    let mut by_shard: std::collections::BTreeMap<u16, (Vec<_>, Vec<_>)> =
        std::collections::BTreeMap::new();
    for (shard, entry, reply) in batch.drain(..) {
        let group = by_shard.entry(shard).or_default();
        group.0.push(entry);
        group.1.push(reply);
    }
    for (shard, (entries, replies)) in by_shard {
        // Patience of one lease: past it, the leases are gone and the jobs will run again
        // anyway.
        let lease = queue.settings().lease;
        let settled = settle_with_retry(queue, kind, shard, &entries, lease).await;
        for (i, reply) in replies.into_iter().enumerate() {
            let one = settled.as_ref().and_then(|v| v.get(i).cloned());
            // The job's future may have been dropped (worker shutting down): nothing waits
            // for the answer then, and the settle has happened.
            let _ = reply.send(one);
        }
    }
}

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
        // A worker restarted or dropped mid-fetch: the leases that fetch takes are swept by
        // `release_all` at shutdown, or expire.
        if let Some(fetch) = self.fetching.take() {
            fetch.abort();
        }
    }
}

impl<P: DeserializeOwned + Send + 'static> RedisBackend<P> {
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

impl<P: DeserializeOwned + Send + 'static> Backend for RedisBackend<P> {
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
                let meta = &t.args.meta;
                let id = meta.job_id.to_string();
                by_shard
                    .entry(self.runner.book.shard(&id))
                    .or_default()
                    .push((
                        id,
                        owner(&self.runner.worker_id, meta.attempt),
                        Settle::Release,
                    ));
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
                        for (id, _, _) in &entries {
                            runner.book.remove(id);
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
        AckLayer {
            runner: self.runner.clone(),
        }
    }
}

/// The backend's middleware: classifies and settles every job. See the module docs.
#[derive(Debug, Clone)]
pub struct AckLayer {
    runner: KindRunner,
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
                delay: *retry_after,
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
        let runner = self.runner.clone();
        let kind = runner.kind;
        let span = tracing::info_span!("job",
            kind,
            job_id = %meta.job_id,
            attempt = meta.attempt,
            tenant_id = %meta.tenant_id,
            correlation_id = %meta.correlation_id,
            message_id = %meta.message_id,
        );
        let inner = span.in_scope(|| self.inner.call(task));
        async move {
            runner.observer.started(&meta).await;
            let started_at = Utc::now();
            if meta.attempt == 1 {
                let wait = (started_at - meta.timestamp).to_std().unwrap_or_default();
                metrics::histogram!(m::JOB_WAIT_SECONDS, m::label::KIND => kind)
                    .record(wait.as_secs_f64());
            }
            let clock = Instant::now();
            let result = inner.await.map(|_| ()).map_err(Into::into);
            let duration = clock.elapsed();
            metrics::histogram!(m::JOB_DURATION_SECONDS, m::label::KIND => kind)
                .record(duration.as_secs_f64());
            let (how, error_code) = classify(&result);
            if let Err(error) = &result {
                tracing::warn!(error = %error, error.cause_chain = %cause_chain(error.as_ref()),
                    code = error_code, "Job run failed.");
            }
            let id = meta.job_id.to_string();
            let settling = Settling::start(&runner.settling);
            let settled = runner
                .settle_one(id.clone(), owner(&runner.worker_id, meta.attempt), how)
                .await
                .unwrap_or(Settled::Lost);
            runner.book.remove(&id);
            drop(settling);
            record_outcome(kind, &settled, error_code);
            runner
                .observer
                .finished(JobReport {
                    meta,
                    settled: settled.clone(),
                    error_code,
                    started_at,
                    duration,
                })
                .await;
            Ok(settled)
        }
        .instrument(span)
        .boxed()
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
            tracing::error!(reason = %reason, code, "Job dead-lettered.");
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
