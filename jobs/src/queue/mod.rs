//! The queue engine: the only code that touches Redis job keys.
//!
//! apalis 1.0 supplies the worker loop, tower middleware and `Monitor`; this module supplies
//! the Redis backend under them, because apalis-redis 1.0.0 loses or stalls jobs in ways we
//! cannot accept (see `shared/apalis-notes.md` §5). What it guarantees:
//!
//! - **At-least-once, never lost.** A fetched job is *leased* (deadline from Redis `TIME`, so
//!   worker clocks do not matter) and renewed while its handler runs. If the worker dies, any
//!   other worker's reaper puts the job back within about one lease. A job whose lease expires
//!   more than `max_lease_expiries` times is dead-lettered as `poisoned`.
//! - **Bounded cost per job.** Every script touches a bounded slice (no `LREM`, no `unpack` of
//!   a whole backlog), so the Redis cost of a job does not grow with the backlog.
//! - **Retries that survive restarts.** Attempts and the retry policy live in Redis; backoff is
//!   exponential with jitter; rate-limited jobs run again later without using an attempt.
//! - **Redis errors are weather, not death.** Every Redis call of a worker is retried with
//!   backoff; a worker never exits because Redis blinked.
//! - **Dedupe at enqueue** on `(tenant, message_id)`, decided inside the enqueue script.
//!
//! # Layout
//! - [`keys`](self): key names; one hash tag per queue.
//! - `lua/*.lua`: the scripts (enqueue, fetch, ack, renew, reap, heartbeat).
//! - [`backend`]: the apalis `Backend` and the ack layer that settles each job.
//! - [`upkeep`]: heartbeats, lease renewal and the reaper, run by every worker process.
//!
//! The rest of the code sees only [`Queue`] (enqueue, counts, workers, dead letters) and
//! [`backend::RedisBackend`].

pub mod backend;
pub mod dlq;
mod keys;
pub mod schedule;
pub mod upkeep;
pub mod whereabouts;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use leadq_platform::config::{KindSettings, QueueSettings};
use leadq_platform::metrics as m;
use leadq_platform::secret::Secret;
use redis::aio::ConnectionManager;
use serde::Serialize;
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::signing::Signer;
pub(crate) use keys::Keys;

/// Errors of the queue engine.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis did not answer, or answered with an error.
    #[error("redis is unavailable")]
    Redis(#[from] redis::RedisError),
    /// Redis answered something the scripts never return (a bug, or a foreign key clash).
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// The job cannot be enqueued as given.
    #[error("invalid job: {0}")]
    Invalid(String),
}

/// How many jobs one enqueue script call carries at most.
pub const ENQUEUE_CHUNK: usize = 1000;
/// How many due scheduled jobs one fetch promotes at most.
const PROMOTE_SLICE: usize = 1000;
/// How many expired leases or due jobs one reap call handles at most.
const REAP_SLICE: usize = 1000;

pub(crate) struct Scripts {
    pub(crate) enqueue: redis::Script,
    pub(crate) fetch: redis::Script,
    pub(crate) ack: redis::Script,
    pub(crate) renew: redis::Script,
    pub(crate) reap: redis::Script,
    pub(crate) heartbeat: redis::Script,
    pub(crate) release_owned: redis::Script,
    pub(crate) erase: redis::Script,
    pub(crate) admit: redis::Script,
    pub(crate) dlq: redis::Script,
    pub(crate) tenant: redis::Script,
    pub(crate) lead: redis::Script,
    pub(crate) fire: redis::Script,
}

/// A script that adds ready jobs, with the fair-ordering functions of `lua/fair.lua` before it.
fn fair(body: &str) -> redis::Script {
    redis::Script::new(&format!("{}\n{body}", include_str!("lua/fair.lua")))
}

impl Scripts {
    fn load() -> Self {
        Self {
            enqueue: fair(include_str!("lua/enqueue.lua")),
            fetch: fair(include_str!("lua/fetch.lua")),
            ack: fair(include_str!("lua/ack.lua")),
            renew: redis::Script::new(include_str!("lua/renew.lua")),
            reap: fair(include_str!("lua/reap.lua")),
            heartbeat: redis::Script::new(include_str!("lua/heartbeat.lua")),
            release_owned: fair(include_str!("lua/release_owned.lua")),
            erase: redis::Script::new(include_str!("lua/erase.lua")),
            admit: redis::Script::new(include_str!("lua/admit.lua")),
            dlq: fair(include_str!("lua/dlq.lua")),
            tenant: fair(include_str!("lua/tenant.lua")),
            lead: redis::Script::new(include_str!("lua/lead.lua")),
            fire: redis::Script::new(include_str!("lua/fire.lua")),
        }
    }
}

/// A connection to a standalone Redis or to a Redis Cluster. Cheap to clone (both are
/// multiplexed) and both reconnect by themselves. On a Cluster every command and script is
/// routed by its keys: one queue shard's keys share a hash tag, so a script always runs on the
/// one primary that holds all of them.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Client {
    Single(redis::Client),
    Cluster(Box<redis::cluster::ClusterClient>),
}

impl Client {
    fn open(url: &Secret, cluster: bool) -> Result<Self, QueueError> {
        if cluster {
            let nodes: Vec<String> = url
                .expose()
                .split(',')
                .map(|u| u.trim().to_owned())
                .collect();
            Ok(Client::Cluster(Box::new(
                redis::cluster::ClusterClient::builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .build()?,
            )))
        } else {
            Ok(Client::Single(redis::Client::open(url.expose())?))
        }
    }

    async fn connect(&self) -> Result<Conn, QueueError> {
        Ok(match self {
            Client::Single(c) => Conn::Single(
                c.get_connection_manager_with_config(
                    // The default 500 ms response timeout turns a busy Redis into errors
                    // (apalis-redis#76).
                    redis::aio::ConnectionManagerConfig::new()
                        .set_response_timeout(Some(RESPONSE_TIMEOUT))
                        .set_connection_timeout(Some(CONNECT_TIMEOUT)),
                )
                .await?,
            ),
            Client::Cluster(c) => Conn::Cluster(c.get_async_connection().await?),
        })
    }
}

const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

struct Inner {
    signer: Signer,
    conn: Conn,
    client: Client,
    cfg: QueueSettings,
    scripts: Scripts,
}

/// A handle on the queues. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("prefix", &self.inner.cfg.prefix)
            .finish_non_exhaustive()
    }
}

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
    fn digit(self) -> &'static str {
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantState {
    /// Paused: none of its jobs start.
    pub paused: bool,
    /// Most of its jobs running at once across all workers (`None`: no cap).
    pub cap: Option<u32>,
    /// Its jobs running now (counted only while a cap is set).
    pub running: u64,
    /// Its ready jobs held back (paused, or waiting for room under the cap).
    pub held: u64,
    /// Its share of the workers relative to other tenants (default 1).
    pub weight: f64,
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

/// How a leased job is to be settled.
#[derive(Debug, Clone)]
pub(crate) enum Settle {
    Ok,
    Retry { code: String },
    Dead { reason: String, code: String },
    Snooze { delay: Duration, code: String },
    Release,
}

/// One job as the fetch script leased it.
#[derive(Debug)]
pub(crate) struct Leased {
    pub(crate) id: String,
    pub(crate) shard: u16,
    pub(crate) data: String,
    pub(crate) attempt: u32,
}

/// What one fetch leased, and whether to wait before the next.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub(crate) jobs: Vec<Leased>,
    /// The fetch took the last ready job of its shard (or found none): the next fetch should
    /// wait for a wake-up (or `due_in`) first, not find the shard empty in one more round trip.
    pub(crate) drained: bool,
    /// How long until the earliest scheduled job is due (`None`: nothing scheduled, or not
    /// looked up: a fetch that returns jobs and is not drained does not need it).
    pub(crate) due_in: Option<Duration>,
}

/// A kind is a queue name: 1-64 of `a-z`, `0-9`, `_`. The catalogue of kinds the platform
/// runs is [`crate::kinds`]; the engine itself serves any well-formed kind (the bench uses one).
pub fn valid_kind(kind: &str) -> bool {
    (1..=64).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn value_str(v: &redis::Value) -> Result<String, QueueError> {
    redis::from_redis_value_ref::<String>(v).map_err(|e| QueueError::Protocol(e.to_string()))
}

fn value_i64(v: &redis::Value) -> Result<i64, QueueError> {
    redis::from_redis_value_ref::<i64>(v).map_err(|e| QueueError::Protocol(e.to_string()))
}

impl Queue {
    /// Connects to Redis (eagerly, with timeouts) and checks it answers. `signer` signs every
    /// envelope this handle enqueues and verifies every one its workers fetch.
    pub async fn connect(
        url: &Secret,
        cfg: QueueSettings,
        signer: Signer,
    ) -> Result<Self, QueueError> {
        let client = Client::open(url, cfg.redis_cluster)?;
        let conn = client.connect().await?;
        let q = Self {
            inner: Arc::new(Inner {
                signer,
                conn,
                client,
                cfg,
                scripts: Scripts::load(),
            }),
        };
        q.ping().await?;
        Ok(q)
    }

    /// A separate connection for blocking waits, which must not hold up the shared one.
    pub(crate) async fn blocking_connection(&self) -> Result<Conn, QueueError> {
        self.inner.client.connect().await
    }

    pub(crate) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// The shards of every kind: `0..LEADQ_QUEUE_SHARDS`.
    pub(crate) fn shards(&self) -> std::ops::Range<u16> {
        0..self.inner.cfg.shards.max(1)
    }

    /// The shard holding `tenant`'s jobs (of every kind): stable for a given shard count.
    pub fn shard_of(&self, tenant: &Uuid) -> u16 {
        let n = self.inner.cfg.shards.max(1) as u64;
        let v = tenant.as_u128();
        ((v as u64 ^ (v >> 64) as u64) % n) as u16
    }

    pub(crate) fn signer(&self) -> &Signer {
        &self.inner.signer
    }

    pub(crate) fn scripts(&self) -> &Scripts {
        &self.inner.scripts
    }

    /// The queue settings this handle was built with.
    pub fn settings(&self) -> &QueueSettings {
        &self.inner.cfg
    }

    pub(crate) fn keys(&self, kind: &str, shard: u16) -> Keys {
        Keys::new(&self.inner.cfg.prefix, kind, shard)
    }

    /// The settings of `kind`, or the settings every kind defaults to.
    pub(crate) fn kind_settings(&self, kind: &str) -> KindSettings {
        self.inner
            .cfg
            .kinds
            .get(kind)
            .cloned()
            .unwrap_or(KindSettings {
                concurrency: 1,
                max_attempts: 5,
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(300),
                timeout: Duration::from_secs(60),
            })
    }

    /// Checks Redis answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Enqueues jobs: one script call per kind and chunk of [`ENQUEUE_CHUNK`], each atomic.
    /// Returns one [`Enqueued`] per job, in order.
    pub async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError> {
        let mut out: Vec<Option<Enqueued>> = vec![None; jobs.len()];
        let mut by_kind: BTreeMap<(String, u16), Vec<(usize, NewJob)>> = BTreeMap::new();
        for (i, job) in jobs.into_iter().enumerate() {
            let e = &job.envelope;
            if !crate::envelope::valid_id(&e.message_id) {
                return Err(QueueError::Invalid("message_id".into()));
            }
            if !valid_kind(&e.action) {
                return Err(QueueError::Invalid(format!("bad kind {:?}", e.action)));
            }
            let shard = self.shard_of(&e.tenant_id);
            by_kind
                .entry((e.action.clone(), shard))
                .or_default()
                .push((i, job));
        }
        let mut conn = self.conn();
        let ttl = self.inner.cfg.dedupe_ttl.as_millis().to_string();
        for ((kind, shard), jobs) in by_kind {
            let keys = self.keys(&kind, shard);
            for chunk in jobs.chunks(ENQUEUE_CHUNK) {
                let mut inv = self.inner.scripts.enqueue.prepare_invoke();
                inv.key(&keys.ready)
                    .key(&keys.jobs)
                    .key(&keys.scheduled)
                    .key(&keys.wake)
                    .key(&keys.fair)
                    .key(&keys.index)
                    .key(&keys.parked);
                inv.arg(&ttl).arg(chunk.len());
                let mut ids = Vec::with_capacity(chunk.len());
                for (_, job) in chunk {
                    let mut e = job.envelope.clone();
                    self.inner
                        .signer
                        .sign(&mut e)
                        .map_err(|err| QueueError::Invalid(err.to_string()))?;
                    let id = Uuid::now_v7();
                    inv.key(keys.dedupe(&e.tenant_id, &e.message_id));
                    let data = serde_json::to_string(&e)
                        .map_err(|err| QueueError::Invalid(err.to_string()))?;
                    let run_at = job.run_at.map(|t| t.timestamp_millis()).unwrap_or(0);
                    inv.arg(id.to_string())
                        .arg(data)
                        .arg(run_at)
                        .arg(e.tenant_id.to_string())
                        .arg(job.priority.digit());
                    ids.push(id);
                }
                let stored: Vec<String> = inv.invoke_async(&mut conn).await?;
                if stored.len() != chunk.len() {
                    return Err(QueueError::Protocol("enqueue reply length".into()));
                }
                for (((i, job), id), got) in chunk.iter().zip(ids).zip(stored) {
                    let job_id: Uuid = got
                        .parse()
                        .map_err(|_| QueueError::Protocol("dedupe key holds a non-id".into()))?;
                    let duplicate = job_id != id;
                    metrics::counter!(m::JOBS_ENQUEUED_TOTAL,
                        m::label::KIND => kind.clone(),
                        m::label::RESULT => if duplicate { "duplicate" } else { "enqueued" })
                    .increment(1);
                    out[*i] = Some(Enqueued {
                        job_id,
                        message_id: job.envelope.message_id.clone(),
                        duplicate,
                    });
                }
            }
            if shard != 0 {
                // Idle workers block on shard 0's wake list only (one key: a blocking wait
                // cannot span hash slots on a Cluster); the script woke its own shard's.
                self.wake(&kind).await?;
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| QueueError::Protocol("missing enqueue result".into())))
            .collect()
    }

    /// Wakes `kind`'s idle workers (they block on shard 0's wake list).
    pub(crate) async fn wake(&self, kind: &str) -> Result<(), QueueError> {
        let wake = self.keys(kind, 0).wake;
        let _: () = redis::pipe()
            .lpush(&wake, 1)
            .ignore()
            .ltrim(&wake, 0, 7)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Sets a tenant's share of `kind`'s workers relative to other tenants with ready jobs
    /// (default 1; a tenant of weight 2 is served twice as often as one of weight 1 while both
    /// have work waiting).
    pub async fn set_tenant_weight(
        &self,
        kind: &str,
        tenant: Uuid,
        weight: f64,
    ) -> Result<(), QueueError> {
        if !(weight.is_finite() && (0.01..=1000.0).contains(&weight)) {
            return Err(QueueError::Invalid("weight must be 0.01-1000".into()));
        }
        let _: i64 = redis::cmd("HSET")
            .arg(&self.keys(kind, self.shard_of(&tenant)).fair)
            .arg(format!("w:{tenant}"))
            .arg(weight)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Pauses `kind` for one tenant: none of its jobs start (running ones finish) until
    /// [`Queue::resume_tenant`]. Its jobs are still accepted and kept in order; other tenants
    /// are unaffected.
    pub async fn pause_tenant(
        &self,
        kind: &str,
        tenant: Uuid,
    ) -> Result<TenantControl, QueueError> {
        self.tenant_control(kind, tenant, "pause", 0).await
    }

    /// Resumes a paused tenant: its held jobs re-enter the queue behind its other work.
    pub async fn resume_tenant(
        &self,
        kind: &str,
        tenant: Uuid,
    ) -> Result<TenantControl, QueueError> {
        self.tenant_control(kind, tenant, "resume", 0).await
    }

    /// Caps how many of `tenant`'s jobs of `kind` run at once across all workers (`None`
    /// removes the cap). Jobs over the cap wait, in order, and start as the tenant's running
    /// jobs finish; the slots they leave go to other tenants.
    pub async fn set_tenant_cap(
        &self,
        kind: &str,
        tenant: Uuid,
        cap: Option<u32>,
    ) -> Result<TenantControl, QueueError> {
        if cap == Some(0) {
            return Err(QueueError::Invalid("a cap must be at least 1".into()));
        }
        self.tenant_control(kind, tenant, "cap", cap.unwrap_or(0))
            .await
    }

    /// A tenant's controls and held jobs in `kind`'s queue.
    pub async fn tenant_state(&self, kind: &str, tenant: Uuid) -> Result<TenantState, QueueError> {
        let k = self.keys(kind, self.shard_of(&tenant));
        type Fields = (Option<String>, Option<u32>, Option<u64>, Option<f64>);
        let ((paused, cap, running, weight), held): (Fields, u64) = redis::pipe()
            .cmd("HMGET")
            .arg(&k.fair)
            .arg(format!("p:{tenant}"))
            .arg(format!("c:{tenant}"))
            .arg(format!("r:{tenant}"))
            .arg(format!("w:{tenant}"))
            .cmd("ZLEXCOUNT")
            .arg(&k.parked)
            .arg(format!("[{tenant}|"))
            .arg(format!("({tenant}}}"))
            .query_async(&mut self.conn())
            .await?;
        Ok(TenantState {
            paused: paused.is_some(),
            cap,
            running: if cap.is_some() {
                running.unwrap_or(0)
            } else {
                0
            },
            held,
            weight: weight.unwrap_or(1.0),
        })
    }

    /// Runs `lua/tenant.lua`, in bounded slices until nothing more can move.
    async fn tenant_control(
        &self,
        kind: &str,
        tenant: Uuid,
        action: &str,
        cap: u32,
    ) -> Result<TenantControl, QueueError> {
        const SLICE: u64 = 1000;
        let k = self.keys(kind, self.shard_of(&tenant));
        let mut conn = self.conn();
        let mut action = action;
        let mut resumed = 0;
        loop {
            let (moved, held): (u64, u64) = self
                .inner
                .scripts
                .tenant
                .key(&k.ready)
                .key(&k.jobs)
                .key(&k.leases)
                .key(&k.wake)
                .key(&k.fair)
                .key(&k.index)
                .key(&k.parked)
                .arg(tenant.to_string())
                .arg(action)
                .arg(cap)
                .arg(SLICE)
                .invoke_async(&mut conn)
                .await?;
            resumed += moved;
            if moved < SLICE {
                if resumed > 0 && k.tag != self.keys(kind, 0).tag {
                    self.wake(kind).await?;
                }
                return Ok(TenantControl { resumed, held });
            }
            // A full slice moved: the tenant is not paused (nothing moves while it is), so
            // carry on with plain resumes, which move the rest without re-counting leases.
            action = "resume";
        }
    }

    /// Marks a producer's delivery id as seen for `tenant` (for `ttl`), atomically: `true` the
    /// first time, `false` for a repeat. For producers that number their deliveries apart
    /// from their events (Chatwoot's `X-Chatwoot-Delivery`); the key lives in `kind`'s slot.
    pub async fn mark_seen(
        &self,
        kind: &str,
        tenant: Uuid,
        id: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, QueueError> {
        if !crate::envelope::valid_id(id) {
            return Err(QueueError::Invalid("delivery id".into()));
        }
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys(kind, self.shard_of(&tenant)).seen(&tenant, id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut self.conn())
            .await?;
        Ok(set.is_some())
    }

    /// Forgets a delivery id marked by [`Queue::mark_seen`] (its job could not be enqueued,
    /// so a redelivery must not count as a duplicate).
    pub async fn unmark_seen(&self, kind: &str, tenant: Uuid, id: &str) -> Result<(), QueueError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.keys(kind, self.shard_of(&tenant)).seen(&tenant, id))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Enqueues one job to run as soon as a worker is free (see [`Queue::enqueue`]).
    pub async fn enqueue_now(&self, envelope: Envelope) -> Result<Enqueued, QueueError> {
        self.enqueue(vec![NewJob::now(envelope)])
            .await?
            .pop()
            .ok_or_else(|| QueueError::Protocol("enqueue returned nothing".into()))
    }

    /// Writes the retry policy of `kind` to Redis, where the ack script reads it.
    pub async fn publish_policy(&self, kind: &str) -> Result<(), QueueError> {
        let s = self.kind_settings(kind);
        for shard in self.shards() {
            let _: () = redis::cmd("HSET")
                .arg(&self.keys(kind, shard).policy)
                .arg("max_attempts")
                .arg(s.max_attempts)
                .arg("backoff_base_ms")
                .arg(s.backoff_base.as_millis() as u64)
                .arg("backoff_max_ms")
                .arg(s.backoff_max.as_millis() as u64)
                .query_async(&mut self.conn())
                .await?;
        }
        Ok(())
    }

    /// Counts of one kind, summed over its shards (one round trip per shard).
    pub async fn counts(&self, kind: &str) -> Result<KindCounts, QueueError> {
        let mut c = KindCounts {
            kind: kind.to_owned(),
            ..KindCounts::default()
        };
        for shard in self.shards() {
            let k = self.keys(kind, shard);
            type Reply = (u64, u64, u64, u64, u64, BTreeMap<String, u64>);
            let (pending, held, scheduled, running, dead, stats): Reply = redis::pipe()
                .zcard(&k.ready)
                .zcard(&k.parked)
                .zcard(&k.scheduled)
                .zcard(&k.leases)
                .zcard(&k.dead)
                .hgetall(&k.stats)
                .query_async(&mut self.conn())
                .await?;
            let stat = |name: &str| stats.get(name).copied().unwrap_or(0);
            c.pending += pending;
            c.held += held;
            c.scheduled += scheduled;
            c.running += running;
            c.dead += dead;
            c.done += stat("completed");
            c.failed += stat("failed");
            c.retries += stat("retried");
            c.rate_limited += stat("rate_limited");
            c.recovered += stat("recovered");
        }
        Ok(c)
    }

    /// The live workers of the given kinds, merged per worker.
    pub async fn workers(&self, kinds: &[&str]) -> Result<Vec<WorkerStatus>, QueueError> {
        let mut conn = self.conn();
        let mut merged: BTreeMap<String, WorkerStatus> = BTreeMap::new();
        for kind in kinds {
            // The worker registry of a kind lives in its shard 0.
            let k = self.keys(kind, 0);
            let (beats, infos): (Vec<(String, i64)>, BTreeMap<String, String>) = redis::pipe()
                .zrange_withscores(&k.workers, 0, -1)
                .hgetall(&k.worker_info)
                .query_async(&mut conn)
                .await?;
            for (id, beat) in beats {
                let Some(info) = infos
                    .get(&id)
                    .and_then(|j| serde_json::from_str::<WorkerInfo>(j).ok())
                else {
                    continue;
                };
                let last = ms_to_time(beat);
                let entry = merged.entry(id.clone()).or_insert_with(|| WorkerStatus {
                    id,
                    host: info.host.clone(),
                    pid: info.pid,
                    kinds: info.kinds.clone(),
                    started_at: info.started_at,
                    last_heartbeat: last,
                    in_flight: 0,
                });
                entry.in_flight += info.in_flight;
                entry.last_heartbeat = entry.last_heartbeat.max(last);
            }
        }
        Ok(merged.into_values().collect())
    }

    /// The most recent dead letters of `kind`, newest first.
    pub async fn dead_letters(
        &self,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self
            .dead_letter_page(kind, &dlq::Filter::default(), None, limit)
            .await?
            .items)
    }

    /// Leases up to `n` jobs of `kind` for `worker` from `shard`.
    pub(crate) async fn fetch(
        &self,
        kind: &str,
        shard: u16,
        worker: &str,
        n: usize,
    ) -> Result<Fetched, QueueError> {
        let k = self.keys(kind, shard);
        // Workers wait on shard 0's wake list (see `wait_for_work`): only a queue of one shard
        // may have its wake-ups cleared by a fetch that drained it.
        let own_wake_list = self.shards().len() == 1;
        let reply: Vec<redis::Value> = self
            .inner
            .scripts
            .fetch
            .key(&k.ready)
            .key(&k.jobs)
            .key(&k.leases)
            .key(&k.scheduled)
            .key(&k.fair)
            .key(&k.index)
            .key(&k.parked)
            .key(k.suspect(worker))
            .key(&k.wake)
            .arg(n)
            .arg(self.inner.cfg.lease.as_millis() as u64)
            .arg(worker)
            .arg(PROMOTE_SLICE)
            .arg(u8::from(own_wake_list))
            .invoke_async(&mut self.conn())
            .await?;
        let (now, next_due, drained) = match reply.get(..3) {
            Some([now, next, drained]) => (value_i64(now)?, value_i64(next)?, value_i64(drained)?),
            _ => return Err(QueueError::Protocol("fetch reply shape".into())),
        };
        let due_in = (next_due >= 0).then(|| Duration::from_millis((next_due - now).max(0) as u64));
        let mut out = Vec::with_capacity(reply.len() / 3);
        for triple in reply.get(3..).unwrap_or_default().chunks(3) {
            let [id, data, attempt] = triple else {
                return Err(QueueError::Protocol("fetch reply shape".into()));
            };
            out.push(Leased {
                id: value_str(id)?,
                shard,
                data: value_str(data)?,
                attempt: u32::try_from(value_i64(attempt)?).unwrap_or(u32::MAX),
            });
        }
        Ok(Fetched {
            jobs: out,
            drained: drained == 1,
            due_in,
        })
    }

    /// Removes every queued or dead-lettered job of `kind` whose envelope matches `wanted`
    /// (erasure of personal data). Scans the queue's job data in slices (erasure is rare; the
    /// scan never blocks Redis for long). Running jobs are left to their handler, which checks
    /// the erasure tombstone. Returns (removed, still running).
    pub async fn erase_where(
        &self,
        kind: &str,
        wanted: impl Fn(&Envelope) -> bool,
    ) -> Result<(u64, u64), QueueError> {
        let (mut removed, mut running) = (0, 0);
        for shard in self.shards() {
            let (r, n) = self.erase_in_shard(kind, shard, &wanted).await?;
            removed += r;
            running += n;
        }
        Ok((removed, running))
    }

    async fn erase_in_shard(
        &self,
        kind: &str,
        shard: u16,
        wanted: &impl Fn(&Envelope) -> bool,
    ) -> Result<(u64, u64), QueueError> {
        let k = self.keys(kind, shard);
        let mut conn = self.conn();
        let mut matched: Vec<String> = Vec::new();
        for hash in [&k.jobs, &k.dead_data] {
            let mut cursor: u64 = 0;
            loop {
                let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                    .arg(hash)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await?;
                for (field, value) in page {
                    if field.contains(':') {
                        continue; // attempts, owner, … not an envelope
                    }
                    if serde_json::from_str::<Envelope>(&value).is_ok_and(|e| wanted(&e)) {
                        matched.push(field);
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let (mut removed, mut running) = (0, 0);
        for chunk in matched.chunks(500) {
            let (r, n): (u64, u64) = self
                .inner
                .scripts
                .erase
                .key(&k.jobs)
                .key(&k.ready)
                .key(&k.scheduled)
                .key(&k.leases)
                .key(&k.dead)
                .key(&k.dead_data)
                .key(&k.index)
                .key(&k.parked)
                .arg(chunk)
                .invoke_async(&mut conn)
                .await?;
            removed += r;
            running += n;
        }
        Ok((removed, running))
    }

    /// Hands back every job of `kind` leased by `worker` (see `lua/release_owned.lua`).
    pub(crate) async fn release_owned(&self, kind: &str, worker: &str) -> Result<u64, QueueError> {
        let mut released = 0;
        for shard in self.shards() {
            let k = self.keys(kind, shard);
            let n: u64 = self
                .inner
                .scripts
                .release_owned
                .key(&k.jobs)
                .key(&k.leases)
                .key(&k.ready)
                .key(&k.wake)
                .key(&k.fair)
                .key(&k.index)
                .key(&k.parked)
                .arg(worker)
                .arg(100_000)
                .invoke_async(&mut self.conn())
                .await?;
            released += n;
        }
        if released > 0 {
            self.wake(kind).await?;
        }
        Ok(released)
    }

    /// Settles leased jobs of `kind` in one script call. `entries` are (job id, owner, how).
    pub(crate) async fn settle(
        &self,
        kind: &str,
        shard: u16,
        entries: &[(String, String, Settle)],
    ) -> Result<Vec<Settled>, QueueError> {
        let k = self.keys(kind, shard);
        let s = self.kind_settings(kind);
        let mut inv = self.inner.scripts.ack.prepare_invoke();
        for key in [
            &k.jobs,
            &k.leases,
            &k.scheduled,
            &k.dead,
            &k.dead_data,
            &k.done,
            &k.stats,
            &k.policy,
            &k.ready,
            &k.wake,
            &k.fair,
            &k.index,
            &k.parked,
        ] {
            inv.key(key);
        }
        inv.arg(entries.len())
            .arg(s.max_attempts)
            .arg(s.backoff_base.as_millis() as u64)
            .arg(s.backoff_max.as_millis() as u64);
        for (id, owner, how) in entries {
            inv.arg(id).arg(owner);
            match how {
                Settle::Ok => inv.arg("ok").arg("").arg(""),
                Settle::Retry { code } => inv.arg("retry").arg(code).arg(rand::random::<f64>()),
                Settle::Dead { reason, code } => inv.arg("dead").arg(reason).arg(code),
                Settle::Snooze { delay, code } => {
                    inv.arg("snooze").arg(delay.as_millis() as u64).arg(code)
                }
                Settle::Release => inv.arg("release").arg("").arg(""),
            };
        }
        let mut reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        if reply.len() > entries.len() && reply.last().is_some_and(|w| w == "woke") {
            reply.pop();
            self.forward_wake(kind, shard).await;
        }
        reply.iter().map(|r| settled(r)).collect()
    }

    /// Passes a wake-up a script pushed on `shard`'s own list on to shard 0's, where idle
    /// workers wait (see [`Queue::wake`]). The script's work is done by then: a failure here
    /// is logged, not returned (the workers look again within half a second anyway).
    pub(crate) async fn forward_wake(&self, kind: &str, shard: u16) {
        if shard != 0 {
            if let Err(error) = self.wake(kind).await {
                metrics::counter!(m::QUEUE_REDIS_ERRORS_TOTAL, m::label::OP => "wake").increment(1);
                tracing::warn!(kind, shard, error = %error,
                    "Could not wake idle workers; they look again within half a second.");
            }
        }
    }
}

/// One entry of the ack script's reply: `<result>` or `<result>:<detail>` (see `lua/ack.lua`).
fn settled(entry: &str) -> Result<Settled, QueueError> {
    let (result, detail) = entry.split_once(':').unwrap_or((entry, ""));
    let ms = || {
        detail
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| QueueError::Protocol(format!("ack result {entry}")))
    };
    match result {
        "completed" => Ok(Settled::Completed),
        "retried" => Ok(Settled::Retried { delay: ms()? }),
        "dead" => Ok(Settled::Dead {
            reason: detail.to_owned(),
        }),
        "snoozed" => Ok(Settled::Snoozed { delay: ms()? }),
        "released" => Ok(Settled::Released),
        "lost" => Ok(Settled::Lost),
        _ => Err(QueueError::Protocol(format!("ack result {entry}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_replies_are_read_back_into_what_happened() {
        assert!(matches!(settled("completed"), Ok(Settled::Completed)));
        assert!(matches!(settled("lost"), Ok(Settled::Lost)));
        assert!(matches!(settled("released"), Ok(Settled::Released)));
        assert!(matches!(
            settled("retried:1500"),
            Ok(Settled::Retried { delay }) if delay == Duration::from_millis(1500)
        ));
        assert!(matches!(
            settled("snoozed:60000"),
            Ok(Settled::Snoozed { delay }) if delay == Duration::from_secs(60)
        ));
        // A reason keeps everything after the first colon.
        assert!(matches!(
            settled("dead:malformed_payload"),
            Ok(Settled::Dead { reason }) if reason == "malformed_payload"
        ));
        for bad in ["", "retried", "retried:soon", "finished", "completed!"] {
            assert!(
                matches!(settled(bad), Err(QueueError::Protocol(_))),
                "{bad:?} is not an ack result"
            );
        }
    }
}
