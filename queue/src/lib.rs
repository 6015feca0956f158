//! The queue engine: the only code that touches Redis job keys.
//!
//! apalis 1.0 supplies the worker loop, tower middleware and `Monitor`; this module supplies
//! the Redis backend under them, because apalis-redis 1.0.0 loses or stalls jobs in ways we
//! cannot accept: its fetch unpacks every due job at once (past about 8,000 the worker dies),
//! its cost grows with the backlog (`LREM` on the active list), `max_attempts` is ignored,
//! retry delays are fixed, and a script touching a global key breaks on Redis Cluster. What it
//! guarantees instead:
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
//! Its crate boundary is the point: `redis` is a dependency of this crate only (among `jobs`,
//! `api` and `worker`), so the compiler keeps every Redis key and script in here. It depends on
//! `leadq-platform` and on nothing above it.
//!
//! # Public API
//! - **Enqueue**: [`Queue::enqueue`] / [`Queue::enqueue_now`] a signed [`envelope::Envelope`]
//!   as a [`NewJob`] (priority, `run_at`); [`Enqueued`] says whether it was a duplicate.
//! - **Run**: [`backend::KindRunner`] and [`backend::RedisBackend`] (the apalis backend: fetch,
//!   lease, settle through [`backend::AckLayer`]); handlers get a [`backend::Job`] whose
//!   payload type says which envelope versions it reads ([`payload::Payload`]; unknown ones
//!   are dead-lettered `unsupported_version`) and return [`JobError`] (transient / permanent /
//!   rate-limited). [`upkeep`] keeps leases, heartbeats and the reaper going.
//! - **Read**: [`Queue::counts`], [`Queue::completions`] (per minute, [`Throughput`]),
//!   [`Queue::workers`], [`Queue::dead_letters`], [`whereabouts`]; [`Queue::accepted`] (jobs
//!   each tenant had accepted per kind and day, for billing).
//! - **Find one job** ([`locate`]): [`Queue::locate`] (by id, across kinds and shards: its
//!   [`Located`] state) and [`Queue::job_for_message`] (the job a producer's message id became).
//! - **Dead letters**: [`dlq`] (page, inspect, re-drive, purge).
//! - **Tenant controls** ([`controls`]): [`Queue::pause_tenant`], [`Queue::resume_tenant`],
//!   [`Queue::set_tenant_cap`], [`Queue::set_tenant_weight`], [`Queue::tenant_state`] and
//!   [`Queue::tenant_states`] (controls, held and backlog), and ingest admission
//!   [`Queue::admit`].
//! - **Dedupe marks** of producers' delivery ids: [`Queue::seen`], [`Queue::mark_seen`].
//! - **Erase**: [`Queue::erase_where`] (right to be forgotten).
//! - **Recurring tasks**: [`schedule`] (leader lease, each firing claimed once).
//! - **Error alerts' shared state** ([`alert_state`]): per-fingerprint rate limit and the
//!   digest, for `leadq-notify` (which may not speak Redis itself).
//! - **Edge guards** ([`guard`]): distinct subjects per principal in a sliding window
//!   ([`Queue::sighting`]), failures with lockout ([`Queue::strike`], [`Queue::locked_out`]),
//!   and GCRA budgets ([`Queue::take_budget`]), for abuse detection and the API's edge.
//! - **Expiring records** ([`records`]): [`Queue::record_put`], [`Queue::record_get`] (with an
//!   optional TTL refresh), [`Queue::record_delete`], for server-side state every API replica
//!   shares (console sessions, bulk-operation progress).
//! - **Server cost**: [`probe`] (what Redis itself reports: command stats, memory), for the
//!   bench and operators.
//!
//! # Layout
//! - `lib.rs`: [`Queue`], its connection and settings, the enqueue path and dedupe marks.
//! - [`envelope`], [`signing`], [`error`]: the signed message every job travels in, and
//!   [`JobError`]; [`payload`]: which envelope versions a payload type reads.
//! - `keys.rs`: key names; one hash tag per queue shard, one per tenant's admission.
//! - `conn.rs`: the standalone-or-Cluster connection and the Lua scripts (`lua/*.lua`).
//! - `types.rs`: the values the API takes and returns.
//! - [`controls`]: per-tenant pause, resume, cap, weight; admission.
//! - `lease.rs`: fetch, settle, hand back, wake-ups (the Redis side of running jobs).
//! - [`backend`]: the apalis `Backend`; `ack.rs` its middleware that classifies and settles
//!   each run; `settle.rs` the group commit of acknowledgements; `job.rs` the job and observer
//!   types.
//! - [`upkeep`]: heartbeats, lease renewal and the reaper, run by every worker process.
//! - `status.rs`: counts, completions, workers, latest dead letters; [`dlq`], [`whereabouts`],
//!   [`locate`], `erase.rs`, [`schedule`], [`probe`], [`records`].

mod ack;
pub mod alert_state;
pub mod backend;
mod conn;
pub mod controls;
pub mod dlq;
pub mod envelope;
mod erase;
pub mod error;
pub mod guard;
mod job;
mod keys;
mod lease;
pub mod locate;
pub mod payload;
pub mod probe;
pub mod records;
pub mod schedule;
mod settle;
pub mod signing;
mod status;
mod types;
pub mod upkeep;
mod usage;
pub mod whereabouts;

pub use controls::{Admission, AdmitLimits};
pub use error::JobError;
pub use locate::{JobState, Located};
pub use status::COMPLETIONS_MAX_MINUTES;
pub use types::{
    DeadLetter, Enqueued, KindCounts, NewJob, Priority, Settled, TenantControl, TenantState,
    Throughput, WorkerInfo, WorkerStatus,
};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use leadq_platform::config::{KindSettings, QueueSettings};
use leadq_platform::metrics as m;
use leadq_platform::secret::Secret;
use leadq_platform::telemetry::trace;
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::signing::Signer;
use crate::usage::usage_day;
use conn::Client;
pub(crate) use conn::{Conn, Scripts};
pub(crate) use keys::Keys;
pub(crate) use lease::{Fetched, Leased, Settle};

/// Errors of the queue engine.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis did not answer, or answered with an error.
    #[error("redis is unavailable")]
    Redis(#[from] redis::RedisError),
    /// The TLS handshake failed: a wrong CA, an expired or wrong-host certificate, a refused
    /// client certificate. One sentence, naming the setting to check; never the URL.
    #[error("could not connect to Redis over TLS: {0}")]
    Tls(String),
    /// No connection within the start-up bound.
    #[error("could not connect to Redis within {0:?}")]
    Timeout(Duration),
    /// Redis answered something the scripts never return (a bug, or a foreign key clash).
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// Input the engine refuses: a job that cannot be enqueued as given, a control out of
    /// range, a cursor that is not one, a record name outside `[A-Za-z0-9_-]`. The caller's
    /// mistake, not an outage.
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// How many jobs one enqueue script call carries at most.
pub const ENQUEUE_CHUNK: usize = 1000;
/// How many due scheduled jobs one fetch promotes at most.
const PROMOTE_SLICE: usize = 1000;
/// How many jobs one fetch script call leases at most, whatever the worker asks for. A worker
/// running 256 `lead_score` jobs asks for 384 at start (its concurrency and a prefetch of
/// half); one script leasing them all would hold Redis, and every producer's enqueue, for
/// milliseconds. Bounded, the worker asks again at once (its buffer refills while it has room).
pub const FETCH_MAX: usize = 128;
/// How many expired leases or due jobs one reap call handles at most.
const REAP_SLICE: usize = 1000;
/// Most wake-ups a wake list keeps: pushed with nobody waiting, they pile up no further, and a
/// worker started later still finds enough to fetch until it drains. The scripts keep the same
/// bound (`WAKE_KEPT` in `lua/fair.lua`).
const WAKE_KEPT: isize = 8;

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

/// A kind is a queue name: 1-64 of `a-z`, `0-9`, `_`. The catalogue of kinds the platform
/// runs is `leadq_jobs::kinds`; the engine itself serves any well-formed kind (the bench uses one).
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
        let client = Client::open(url, cfg.redis_cluster, &cfg.redis_tls)?;
        client.check().await?;
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
                    .key(&keys.parked)
                    .key(keys.usage(&usage_day(Utc::now().date_naive())));
                inv.arg(&ttl).arg(chunk.len());
                let mut ids = Vec::with_capacity(chunk.len());
                // One `send <kind>` span per message (OpenTelemetry messaging conventions),
                // open until the script has stored it; its context rides in the envelope.
                let mut sends = Vec::with_capacity(chunk.len());
                for (_, job) in chunk {
                    let mut e = job.envelope.clone();
                    let send = send_span(&kind, &e);
                    e.trace_context = trace::headers_of(&send).into_iter().collect();
                    sends.push(send);
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
                for ((((i, job), id), got), send) in chunk.iter().zip(ids).zip(stored).zip(sends) {
                    let job_id: Uuid = got
                        .parse()
                        .map_err(|_| QueueError::Protocol("dedupe key holds a non-id".into()))?;
                    let duplicate = job_id != id;
                    send.record("job_id", tracing::field::display(job_id));
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

    /// Wakes `kind`'s idle workers (they block on shard 0's wake list), keeping at most
    /// [`WAKE_KEPT`] wake-ups waiting.
    pub(crate) async fn wake(&self, kind: &str) -> Result<(), QueueError> {
        let wake = self.keys(kind, 0).wake;
        let _: () = redis::pipe()
            .lpush(&wake, 1)
            .ignore()
            .ltrim(&wake, 0, WAKE_KEPT - 1)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
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

    /// Whether a delivery id was marked by [`Queue::mark_seen`] (and has not expired).
    pub async fn seen(&self, kind: &str, tenant: Uuid, id: &str) -> Result<bool, QueueError> {
        if !crate::envelope::valid_id(id) {
            return Err(QueueError::Invalid("delivery id".into()));
        }
        let n: i64 = redis::cmd("EXISTS")
            .arg(self.keys(kind, self.shard_of(&tenant)).seen(&tenant, id))
            .query_async(&mut self.conn())
            .await?;
        Ok(n > 0)
    }

    /// Enqueues one job to run as soon as a worker is free (see [`Queue::enqueue`]).
    pub async fn enqueue_now(&self, envelope: Envelope) -> Result<Enqueued, QueueError> {
        self.enqueue(vec![NewJob::now(envelope)])
            .await?
            .pop()
            .ok_or_else(|| QueueError::Protocol("enqueue returned nothing".into()))
    }
}

/// The `send <kind>` span of one message (a child of whatever span enqueues it: a request, or
/// the job that asks for a follow-up).
fn send_span(kind: &str, e: &Envelope) -> tracing::Span {
    tracing::info_span!("send",
        otel.name = %format_args!("send {kind}"),
        otel.kind = "producer",
        messaging.system = "leadq",
        messaging.operation.type = "send",
        messaging.destination.name = %kind,
        messaging.message.id = %e.message_id,
        tenant_id = %e.tenant_id,
        correlation_id = %e.correlation_id,
        job_id = tracing::field::Empty,
    )
}
