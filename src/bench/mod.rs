//! `leadq bench`: the queue benchmark of `shared/bench-protocol.md`.
//!
//! It runs the real stack (our Redis backend under an apalis worker with the production
//! layers) against the given Redis, so its figures compare with BullMQ's on the same server.
//! Latency is `t_done - t_enq`, where `t_done` is read after the job's acknowledgement has
//! returned from Redis (the observer is called after settling), and `t_enq` travels in the
//! payload. Exactly one JSON line goes to stdout.
//!
//! Beyond the protocol's fields it reads Redis itself (on a connection of its own, whose
//! commands it subtracts): `redis` holds the harness's per-job costs (`INFO commandstats` calls
//! per job, Lua included; Redis main-thread CPU per job; …) per phase; the `mem_*` fields give
//! Redis memory per queued job, per retained completed job and, in steady mode, over time;
//! `--backlog B` leaves B ready jobs behind the N measured ones, to show the cost per job does
//! not grow with the backlog. See `docs/bench.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::prelude::{Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use chrono::{TimeZone, Utc};
use clap::{Args, ValueEnum};
use futures::future::BoxFuture;
use futures::FutureExt;
use leadq_platform::config::{KindSettings, Needs, QueueSettings, Settings};
use leadq_platform::keyring::Keyring;
use leadq_platform::secret::Secret;
use leadq_queue::backend::{Job, JobObserver, JobReport, KindRunner};
use leadq_queue::envelope::{Envelope, JobMeta, SCHEMA_VERSION};
use leadq_queue::upkeep::{new_worker_id, Upkeep};
use leadq_queue::JobError;
use leadq_queue::{NewJob, Queue, Settled};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

mod timer;
use timer::PreciseTimer;

const KIND: &str = "bench";

/// Drain or steady.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Enqueue N jobs, then drain them with one worker.
    Drain,
    /// One worker; a producer child enqueues R jobs/s for T seconds, one call per job.
    Steady,
    /// Fairness: tenant A enqueues N jobs at once, then tenant B enqueues R jobs/s for T
    /// seconds while A's backlog drains; reports B's latency (`b_lat_ms`) and A's backlog
    /// left when B's last job was enqueued.
    Fair,
}

/// Drain phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Both phases in one process.
    All,
    /// Enqueue N jobs and exit.
    Enqueue,
    /// Drain N jobs and exit.
    Work,
}

/// How the `sleepNms` handler waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SleepTimer {
    /// `tokio::time::sleep`: 1 ms ticks, rounded up (like Node's `setTimeout`).
    Tokio,
    /// A Linux timer fd awaited in tokio's reactor (see `timer.rs`): the handler takes the N
    /// ms the protocol's C/d bound assumes, plus the machine's wake-up latency (under 0.1 ms
    /// here), so the figure measures the queue, not the timer.
    Precise,
}

/// Which tokio runtime the bench process runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchRuntime {
    /// One worker thread per core, as `leadq worker` runs: the queue's own work (fetch,
    /// decode, settle) spreads over the cores.
    MultiThread,
    /// Everything on the bench's one thread, like Node's event loop: no cross-thread wake-up
    /// between a timer, a Redis reply and the handler it resumes.
    CurrentThread,
}

/// Process role (internal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The benchmark proper.
    Bench,
    /// The steady-mode producer child.
    Producer,
}

/// The protocol's command line.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Redis host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Redis port.
    #[arg(long, default_value_t = 6399)]
    port: u16,
    /// drain or steady.
    #[arg(long, value_enum, default_value = "drain")]
    mode: Mode,
    /// Drain only: all, enqueue, work.
    #[arg(long, value_enum, default_value = "all")]
    phase: Phase,
    /// Drain: number of jobs.
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Worker concurrency.
    #[arg(long, default_value_t = 50)]
    c: usize,
    /// Handler: 0 = no-op, else an async sleep of this many ms.
    #[arg(long = "sleep-ms", default_value_t = 0)]
    sleep_ms: u64,
    /// Handler: how the sleep waits (`tokio` like-for-like with `setTimeout`, or `precise`).
    #[arg(long = "sleep-timer", value_enum, default_value = "tokio")]
    sleep_timer: SleepTimer,
    /// The tokio runtime: `multi-thread` (as `leadq worker`) or `current-thread` (one thread).
    #[arg(long, value_enum, default_value = "multi-thread")]
    runtime: BenchRuntime,
    /// Drain enqueue chunk.
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
    /// Steady: jobs per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Steady: seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Payload size (compact JSON bytes).
    #[arg(long = "payload-bytes", default_value_t = 300)]
    payload_bytes: usize,
    /// Queue name (our key prefix).
    #[arg(long, default_value = "bench")]
    queue: String,
    /// Give up waiting after this many seconds (steady, fair: after the sending schedule).
    #[arg(long = "timeout-s", default_value_t = 300)]
    timeout_s: u64,
    /// Max outstanding enqueue calls (steady producer).
    #[arg(long = "max-inflight", default_value_t = 64)]
    max_inflight: usize,
    /// Drain: B extra ready jobs enqueued behind the N measured ones (same kind and tenant,
    /// so they sit in the ready set during the whole work phase); the worker stops after the
    /// N measured completions and the B stay. Per-job figures are the measured jobs'.
    #[arg(long, default_value_t = 0)]
    backlog: usize,
    /// Steady: sample Redis `used_memory` every S seconds (0 = off; default 10 when the
    /// duration is at least 60 s, else off).
    #[arg(long = "mem-sample-s")]
    mem_sample_s: Option<f64>,
    /// Completed job ids kept (count cap of the `done` set); default `LEADQ_KEEP_DONE`, as in
    /// production.
    #[arg(long = "keep-done")]
    keep_done: Option<u64>,
    /// Completed job ids older than this many seconds are trimmed; default
    /// `LEADQ_KEEP_DONE_SECS`, as in production.
    #[arg(long = "keep-done-secs")]
    keep_done_secs: Option<u64>,
    /// How long a `message_id` is remembered for deduplication; default
    /// `LEADQ_DEDUPE_TTL_SECS`, as in production.
    #[arg(long = "dedupe-ttl-secs")]
    dedupe_ttl_secs: Option<u64>,
    /// Internal.
    #[arg(long, value_enum, default_value = "bench")]
    role: Role,
}

/// Unix epoch milliseconds, sub-ms resolution, from the wall clock.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    seq: u64,
    t_enq: f64,
    pad: String,
}

fn payload(seq: u64, t_enq: f64, bytes: usize) -> serde_json::Value {
    let base = serde_json::to_string(&json!({"seq": seq, "t_enq": t_enq, "pad": ""}))
        .map(|s| s.len())
        .unwrap_or(0);
    json!({"seq": seq, "t_enq": t_enq, "pad": "x".repeat(bytes.saturating_sub(base))})
}

/// Tenant B of the fair mode (tenant A, and every other mode, use the nil tenant).
const TENANT_B: uuid::Uuid = uuid::Uuid::from_u128(0xb);

fn envelope(run: &str, seq: u64, t_enq: f64, bytes: usize) -> NewJob {
    tenant_envelope(uuid::Uuid::nil(), run, seq, t_enq, bytes)
}

fn tenant_envelope(tenant: uuid::Uuid, run: &str, seq: u64, t_enq: f64, bytes: usize) -> NewJob {
    NewJob {
        envelope: Envelope {
            schema_version: SCHEMA_VERSION,
            message_id: format!("{run}-{seq}"),
            tenant_id: tenant,
            user_id: "bench".into(),
            action: KIND.into(),
            payload: payload(seq, t_enq, bytes),
            timestamp: Utc
                .timestamp_millis_opt(t_enq as i64)
                .single()
                .unwrap_or_default(),
            correlation_id: run.into(),
            signature: None,
        },
        run_at: None,
        priority: Default::default(),
    }
}

/// Retention of finished work: production's settings (the `LEADQ_*` environment, or its
/// defaults), unless the command line sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Retention {
    keep_done: u64,
    keep_done_secs: u64,
    dedupe_ttl_secs: u64,
}

fn retention(a: &BenchArgs) -> anyhow::Result<Retention> {
    let none = Needs {
        database: false,
        redis: false,
        keys: false,
    };
    let prod = Settings::from_env(none, &[])
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .queue;
    Ok(Retention {
        keep_done: a.keep_done.unwrap_or(prod.keep_done),
        keep_done_secs: a.keep_done_secs.unwrap_or(prod.keep_done_for.as_secs()),
        dedupe_ttl_secs: a.dedupe_ttl_secs.unwrap_or(prod.dedupe_ttl.as_secs()),
    })
}

fn queue_settings(a: &BenchArgs, r: Retention) -> QueueSettings {
    let mut kinds = std::collections::BTreeMap::new();
    kinds.insert(
        KIND,
        KindSettings {
            concurrency: a.c,
            max_attempts: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
        },
    );
    QueueSettings {
        prefix: a.queue.clone(),
        lease: Duration::from_secs(30),
        max_lease_expiries: 3,
        shutdown_timeout: Duration::from_secs(10),
        kinds,
        dedupe_ttl: Duration::from_secs(r.dedupe_ttl_secs),
        keep_done: r.keep_done,
        keep_done_for: Duration::from_secs(r.keep_done_secs),
        dead_letter_ttl: Duration::from_secs(86_400),
        shards: 1,
        redis_cluster: false,
    }
}

async fn connect(a: &BenchArgs) -> anyhow::Result<Queue> {
    let url = Secret::new(format!("redis://{}:{}/", a.host, a.port));
    // The bench signs and verifies like production. Its phases run as separate processes (the
    // harness's enqueue/work split, the steady producer child), so the key is derived from the
    // queue name: a benchmark key, not a secret.
    let key: [u8; 32] = Sha256::digest(format!("leadq-bench:{}", a.queue)).into();
    let signer = leadq_queue::signing::Signer::new(Keyring::single("bench", key));
    Queue::connect(&url, queue_settings(a, retention(a)?), signer)
        .await
        .context("Failed to connect to Redis")
}

impl BenchArgs {
    /// The runtime this run asked for (`--runtime`), built by the caller before `run`.
    pub fn runtime(&self) -> BenchRuntime {
        self.runtime
    }
}

fn handler_name(a: &BenchArgs) -> String {
    if a.sleep_ms > 0 && a.sleep_timer == SleepTimer::Precise {
        format!("sleep{}ms-precise", a.sleep_ms)
    } else if a.sleep_ms > 0 {
        format!("sleep{}ms", a.sleep_ms)
    } else {
        "noop".into()
    }
}

fn base(a: &BenchArgs) -> serde_json::Value {
    json!({
        "peer": "leadq",
        "peer_version": env!("CARGO_PKG_VERSION"),
        "client": "redis-rs 1.8",
        "runtime": match a.runtime {
            BenchRuntime::MultiThread => "rust tokio multi-thread apalis-core 1.0",
            BenchRuntime::CurrentThread => "rust tokio current-thread apalis-core 1.0",
        },
        "mode": a.mode,
        "handler": handler_name(a),
        "c": a.c,
        "payload_bytes": a.payload_bytes,
    })
}

/// One `INFO everything` reading.
#[derive(Debug, Clone, Default, PartialEq)]
struct InfoSnap {
    /// `cmdstat_<name>` calls (Lua's included), by command name.
    calls: BTreeMap<String, u64>,
    /// `cmdstat_<name>` usec.
    usec: BTreeMap<String, u64>,
    /// Every other `field:value` line.
    kv: BTreeMap<String, String>,
    /// Commands the bench's own probe connection had sent before this reading's INFO.
    own: BTreeMap<String, u64>,
    /// Commands with a latency histogram (`latency_percentiles_usec_<name>` lines).
    histograms: u64,
}

/// Parses the text of `INFO` (any sections).
fn parse_info(text: &str) -> InfoSnap {
    let mut s = InfoSnap::default();
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            for (k, v) in fields.split(',').filter_map(|f| f.split_once('=')) {
                let v = v.parse().unwrap_or(0);
                match k {
                    "calls" => s.calls.insert(name.to_owned(), v),
                    "usec" => s.usec.insert(name.to_owned(), v),
                    _ => None,
                };
            }
        } else if let Some((k, v)) = line.split_once(':') {
            if k.starts_with("latency_percentiles_usec_") {
                s.histograms += 1;
            }
            s.kv.insert(k.to_owned(), v.to_owned());
        }
    }
    s
}

impl InfoSnap {
    fn num(&self, k: &str) -> f64 {
        self.kv.get(k).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }

    fn used_memory(&self) -> i64 {
        self.num("used_memory") as i64
    }

    /// `used_memory` less what is not the queue's data and comes once or comes and goes:
    /// client connection buffers, the cached Lua scripts, and the latency histogram Redis
    /// allocates for each command name the first time it runs (`histogram_bytes` each).
    fn held_memory(&self, histogram_bytes: i64) -> i64 {
        self.used_memory()
            - self.num("mem_clients_normal") as i64
            - self.num("used_memory_scripts_eval") as i64
            - self.histograms as i64 * histogram_bytes
    }
}

/// Read-only commands the probe may run once to measure a latency histogram's size.
const HISTOGRAM_PROBES: [&str; 4] = ["lastsave", "lolwut", "echo", "dbsize"];

/// The Redis cost of the work done between two readings, per job: the harness's `per_job`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Cost {
    jobs: usize,
    /// Σ Δcalls over every `cmdstat_*` (commands run inside Lua included), less the bench's own.
    cmds_total: u64,
    cmds_per_job: f64,
    cmd_usec_per_job: f64,
    redis_cpu_us_per_job: f64,
    net_in_bytes_per_job: f64,
    net_out_bytes_per_job: f64,
    reads_per_job: f64,
    writes_per_job: f64,
    /// Calls per job by command name.
    cmds: BTreeMap<String, f64>,
}

fn round_to(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// The cost of what happened between `before` and `after`, divided by `jobs`. The bench's own
/// commands (the INFO of `before` and whatever its probe sent until the INFO of `after`) are
/// subtracted.
fn cost(before: &InfoSnap, after: &InfoSnap, jobs: usize) -> Cost {
    let mut calls: BTreeMap<String, i64> = after
        .calls
        .iter()
        .map(|(k, v)| {
            let was = before.calls.get(k).copied().unwrap_or(0);
            (k.clone(), *v as i64 - was as i64)
        })
        .collect();
    for (k, v) in &after.own {
        let own = v.saturating_sub(before.own.get(k).copied().unwrap_or(0));
        *calls.entry(k.clone()).or_default() -= own as i64;
    }
    calls.retain(|_, v| *v > 0);
    let usec: u64 = calls
        .keys()
        .map(|k| {
            let a = after.usec.get(k).copied().unwrap_or(0);
            a.saturating_sub(before.usec.get(k).copied().unwrap_or(0))
        })
        .sum();
    let total: i64 = calls.values().sum();
    let n = jobs.max(1) as f64;
    let d = |k: &str| after.num(k) - before.num(k);
    let cpu_s = d("used_cpu_user_main_thread") + d("used_cpu_sys_main_thread");
    Cost {
        jobs,
        cmds_total: total as u64,
        cmds_per_job: r3(total as f64 / n),
        cmd_usec_per_job: r3(usec as f64 / n),
        redis_cpu_us_per_job: r3(cpu_s * 1e6 / n),
        net_in_bytes_per_job: round_to(d("total_net_input_bytes") / n, 1),
        net_out_bytes_per_job: round_to(d("total_net_output_bytes") / n, 1),
        reads_per_job: r3(d("total_reads_processed") / n),
        writes_per_job: r3(d("total_writes_processed") / n),
        cmds: calls
            .into_iter()
            .map(|(k, v)| (k, round_to(v as f64 / n, 4)))
            .collect(),
    }
}

/// Two phases' costs added per job (the harness's `add_per_job`); `jobs` is the first's.
fn add_cost(a: &Cost, b: &Cost) -> Cost {
    let mut cmds = a.cmds.clone();
    for (k, v) in &b.cmds {
        let e = cmds.entry(k.clone()).or_default();
        *e = round_to(*e + v, 4);
    }
    Cost {
        jobs: a.jobs,
        cmds_total: a.cmds_total + b.cmds_total,
        cmds_per_job: r3(a.cmds_per_job + b.cmds_per_job),
        cmd_usec_per_job: r3(a.cmd_usec_per_job + b.cmd_usec_per_job),
        redis_cpu_us_per_job: r3(a.redis_cpu_us_per_job + b.redis_cpu_us_per_job),
        net_in_bytes_per_job: round_to(a.net_in_bytes_per_job + b.net_in_bytes_per_job, 1),
        net_out_bytes_per_job: round_to(a.net_out_bytes_per_job + b.net_out_bytes_per_job, 1),
        reads_per_job: r3(a.reads_per_job + b.reads_per_job),
        writes_per_job: r3(a.writes_per_job + b.writes_per_job),
        cmds,
    }
}

/// `used_memory` at the end minus at the midpoint of the samples (`[seconds, bytes]`): the
/// sample whose time is nearest half the last one's.
fn growth_last_half(samples: &[(f64, i64)]) -> Option<i64> {
    let &(t_end, end) = samples.last()?;
    let mid = samples.iter().min_by(|a, b| {
        (a.0 - t_end / 2.0)
            .abs()
            .total_cmp(&(b.0 - t_end / 2.0).abs())
    })?;
    Some(end - mid.1)
}

/// Whole bytes per item, or null when there are no items.
fn per_item(bytes: i64, items: u64) -> serde_json::Value {
    if items == 0 {
        serde_json::Value::Null
    } else {
        json!((bytes as f64 / items as f64).round() as i64)
    }
}

/// The bench's own connection to Redis, for readings. It counts every command it sends, so
/// [`cost`] can leave them out.
#[derive(Clone)]
struct Probe {
    conn: redis::aio::MultiplexedConnection,
    sent: Arc<Mutex<BTreeMap<String, u64>>>,
    /// `{<prefix>:<kind>}`, the bench queue's hash tag (`jobs/src/queue/keys.rs`).
    tag: String,
}

impl Probe {
    async fn connect(a: &BenchArgs) -> anyhow::Result<Self> {
        let client = redis::Client::open(format!("redis://{}:{}/", a.host, a.port))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .context("Failed to connect to Redis (probe)")?;
        Ok(Self {
            conn,
            sent: Arc::default(),
            tag: format!("{{{}:{KIND}}}", a.queue),
        })
    }

    /// Counts one command about to be sent; returns the counts before it.
    fn count(&self, name: &str) -> BTreeMap<String, u64> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let before = sent.clone();
        *sent.entry(name.to_owned()).or_default() += 1;
        before
    }

    /// A full reading (`INFO everything`).
    async fn snap(&self) -> anyhow::Result<InfoSnap> {
        let own = self.count("info");
        let text: String = redis::cmd("INFO")
            .arg("everything")
            .query_async(&mut self.conn.clone())
            .await?;
        let mut s = parse_info(&text);
        s.own = own;
        Ok(s)
    }

    /// `used_memory` alone (`INFO memory`).
    async fn used_memory(&self) -> anyhow::Result<i64> {
        self.count("info");
        let text: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(parse_info(&text).used_memory())
    }

    /// The bytes of one latency histogram: `used_memory` around the first run of a command
    /// that has none yet. None when every candidate already has one. Run it while Redis is
    /// otherwise idle.
    async fn histogram_bytes(&self) -> anyhow::Result<Option<i64>> {
        let s = self.snap().await?;
        let Some(name) = HISTOGRAM_PROBES
            .into_iter()
            .find(|c| !s.kv.contains_key(&format!("latency_percentiles_usec_{c}")))
        else {
            return Ok(None);
        };
        let before = self.used_memory().await?;
        self.count(name);
        let mut cmd = redis::cmd(&name.to_ascii_uppercase());
        if name == "echo" {
            cmd.arg("x");
        }
        let _: redis::Value = cmd.query_async(&mut self.conn.clone()).await?;
        let after = self.used_memory().await?;
        Ok((after > before).then_some(after - before))
    }

    /// What [`InfoSnap::held_memory`] needs: the bytes of a latency histogram when `first`
    /// to `last` added some (else any value gives the same differences: 0).
    async fn histogram_correction(&self, first: &InfoSnap, last: &InfoSnap) -> (i64, bool) {
        if last.histograms == first.histograms {
            return (0, true);
        }
        match self.histogram_bytes().await {
            Ok(Some(b)) => (b, true),
            Ok(None) => (0, false),
            Err(e) => {
                eprintln!("leadq bench: cannot measure a latency histogram: {e}");
                (0, false)
            }
        }
    }

    /// What finished work leaves in Redis: retained completed ids (ZCARD of `done`), the
    /// `done` set's bytes (`MEMORY USAGE … SAMPLES 0`) and the live dedupe keys (SCAN).
    async fn leftovers(&self) -> anyhow::Result<serde_json::Value> {
        let mut conn = self.conn.clone();
        let done = format!("{}:done", self.tag);
        self.count("zcard");
        let retained: u64 = redis::cmd("ZCARD")
            .arg(&done)
            .query_async(&mut conn)
            .await?;
        self.count("memory|usage");
        let done_bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&done)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        let pattern = format!("{}:dedupe:*", self.tag);
        let (mut cursor, mut dedupe_keys) = (0u64, 0u64);
        loop {
            self.count("scan");
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            dedupe_keys += keys.len() as u64;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let done_bytes = done_bytes.unwrap_or(0);
        Ok(
            json!({"retained_done": retained, "done_zset_bytes": done_bytes,
                  "bytes_per_retained_job": per_item(done_bytes as i64, retained),
                  "dedupe_keys": dedupe_keys}),
        )
    }
}

/// Nearest-rank summary of latencies in ms.
fn summarize(mut v: Vec<f64>) -> serde_json::Value {
    if v.is_empty() {
        return json!({"count": 0});
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let pick = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = v.iter().sum::<f64>() / n as f64;
    json!({"count": n, "mean": r3(mean), "p50": r3(pick(0.5)), "p95": r3(pick(0.95)),
           "p99": r3(pick(0.99)), "max": r3(v[n - 1]), "min": r3(v[0])})
}

/// Completions as the worker observes them.
#[derive(Default)]
struct Tally {
    t_enq: HashMap<uuid::Uuid, f64>,
    lat: Vec<f64>,
    /// How long the handler of each measured completed job took, in ms.
    handler_ms: Vec<f64>,
    /// Latencies of tenant B's jobs (fair mode).
    lat_b: Vec<f64>,
    completed: usize,
    failed: usize,
    /// Backlog jobs (`--backlog`) the worker has started: not measured.
    backlog_ids: HashSet<uuid::Uuid>,
    /// Backlog jobs the worker ran to completion (prefetched before it stopped).
    backlog_completed: usize,
    t_first_start: f64,
    t_last_done: f64,
}

struct BenchObserver {
    tally: Arc<Mutex<Tally>>,
    expected: usize,
    done: Arc<Notify>,
}

impl JobObserver for BenchObserver {
    fn started(&self, _: &JobMeta) -> BoxFuture<'static, ()> {
        futures::future::ready(()).boxed()
    }

    fn finished(&self, report: JobReport) -> BoxFuture<'static, ()> {
        let t = now_ms();
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if tally.backlog_ids.remove(&report.meta.job_id) {
            match report.settled {
                Settled::Completed => tally.backlog_completed += 1,
                Settled::Released | Settled::Lost => {}
                _ => tally.failed += 1,
            }
            return futures::future::ready(()).boxed();
        }
        let t_enq = tally.t_enq.remove(&report.meta.job_id);
        match report.settled {
            Settled::Completed => {
                tally.completed += 1;
                tally
                    .handler_ms
                    .push(report.duration.as_secs_f64() * 1000.0);
                if let Some(t_enq) = t_enq {
                    tally.lat.push(t - t_enq);
                    if report.meta.tenant_id == TENANT_B {
                        tally.lat_b.push(t - t_enq);
                    }
                }
                tally.t_last_done = t;
            }
            Settled::Released | Settled::Lost => {}
            _ => tally.failed += 1,
        }
        if tally.completed >= self.expected {
            self.done.notify_one();
        }
        futures::future::ready(()).boxed()
    }
}

#[derive(Clone)]
struct BenchDeps {
    tally: Arc<Mutex<Tally>>,
    sleep: Duration,
    /// The precise timer, when `--sleep-timer precise`.
    timer: Option<Arc<PreciseTimer>>,
    /// Jobs with `seq` at or past this are backlog (`--backlog`), not measured.
    measured: u64,
}

async fn bench_handler(job: Job<Payload>, deps: Data<BenchDeps>) -> Result<(), JobError> {
    {
        let mut tally = deps.tally.lock().unwrap_or_else(|p| p.into_inner());
        if job.payload.seq >= deps.measured {
            tally.backlog_ids.insert(job.meta.job_id);
        } else if tally.t_first_start == 0.0 {
            tally.t_first_start = now_ms();
        }
        if job.payload.seq < deps.measured {
            tally.t_enq.insert(job.meta.job_id, job.payload.t_enq);
        }
    }
    match (&deps.timer, deps.sleep.is_zero()) {
        (_, true) => {}
        (Some(timer), false) => timer.sleep(deps.sleep).await,
        (None, false) => tokio::time::sleep(deps.sleep).await,
    }
    Ok(())
}

struct WorkerRun {
    tally: Tally,
    t_worker_start: f64,
}

/// Runs one worker until `expected` completions (or the timeout). `ready` fires once the
/// worker is registered and about to fetch.
async fn run_worker(
    a: &BenchArgs,
    queue: &Queue,
    expected: usize,
    ready: impl FnOnce(),
) -> anyhow::Result<WorkerRun> {
    queue.publish_policy(KIND).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = Arc::new(Notify::new());
    let observer = Arc::new(BenchObserver {
        tally: tally.clone(),
        expected,
        done: done.clone(),
    });
    let worker_id = new_worker_id();
    let runner = KindRunner::new(queue.clone(), KIND, &worker_id, a.c, observer);
    let upkeep = Upkeep::new(vec![runner.clone()]);
    upkeep.beat().await;
    let deps = BenchDeps {
        tally: tally.clone(),
        sleep: Duration::from_millis(a.sleep_ms),
        timer: match a.sleep_timer {
            SleepTimer::Precise if a.sleep_ms > 0 => Some(Arc::new(
                PreciseTimer::start().context("could not start the bench timer")?,
            )),
            _ => None,
        },
        measured: if a.mode == Mode::Drain && a.backlog > 0 {
            a.n as u64
        } else {
            u64::MAX
        },
    };
    let c = a.c;
    let r = runner.clone();
    let monitor = Monitor::new()
        .register(move |restarts| {
            WorkerBuilder::new(format!("bench@{worker_id}#{restarts}"))
                .backend(r.backend())
                .data(deps.clone())
                .concurrency(c)
                .layer(CatchPanicLayer::with_panic_handler(
                    |_: &Box<dyn std::any::Any + Send>| {
                        JobError::transient("panic", anyhow::anyhow!("bench handler panicked"))
                    },
                ))
                .timeout(Duration::from_secs(60))
                .build(bench_handler)
        })
        .with_terminator(async { tokio::time::sleep(Duration::from_secs(10)).await });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let upkeep_task = tokio::spawn(upkeep.clone().run(async move {
        let _ = stop_rx.await;
    }));
    let t_worker_start = now_ms();
    ready();
    // Steady and fair runs send for `--duration` seconds: the timeout counts from the end of
    // that schedule, so a 10-minute run is not cut at the default 300 s.
    let schedule = match a.mode {
        Mode::Drain => Duration::ZERO,
        Mode::Steady | Mode::Fair => {
            Duration::try_from_secs_f64(a.duration.max(0.0)).unwrap_or(Duration::MAX)
        }
    };
    let timeout = Duration::from_secs(a.timeout_s).saturating_add(schedule);
    let signal = async move {
        if tokio::time::timeout(timeout, done.notified())
            .await
            .is_err()
        {
            eprintln!("leadq bench: timed out waiting for completions");
        }
        Ok(())
    };
    monitor
        .run_with_signal(signal)
        .await
        .context("worker monitor failed")?;
    runner.release_all().await;
    let _ = stop_tx.send(());
    let _ = upkeep_task.await;
    upkeep.leave().await;
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(WorkerRun {
        tally,
        t_worker_start,
    })
}

fn work_fields(out: &mut serde_json::Value, w: WorkerRun, n: usize, a: &BenchArgs) {
    let (c, sleep_ms) = (a.c, a.sleep_ms);
    let t = w.tally;
    let busy = (t.t_last_done - t.t_first_start) / 1000.0;
    let ok = t.completed == n && t.failed == 0;
    out["completed"] = json!(t.completed);
    out["failed"] = json!(t.failed);
    out["drain_s"] = json!(r3(busy));
    out["jobs_per_s"] = if busy > 0.0 {
        json!((t.completed as f64 / busy).round())
    } else {
        serde_json::Value::Null
    };
    out["worker_wall_s"] = json!(r3((t.t_last_done - w.t_worker_start) / 1000.0));
    out["lat_ms"] = summarize(t.lat);
    if sleep_ms > 0 {
        // The protocol's ceiling C/d, what the handler's measured mean allows, and the share
        // of C/d reached: what the queue's own overhead costs.
        let mean = t.handler_ms.iter().sum::<f64>() / t.handler_ms.len().max(1) as f64;
        let bound = c as f64 * 1000.0 / sleep_ms as f64;
        out["bound_c_over_d"] = json!(bound.round());
        if mean > 0.0 {
            out["bound_measured_handler"] = json!((c as f64 * 1000.0 / mean).round());
        }
        if busy > 0.0 {
            out["share_of_bound"] = json!(r3(t.completed as f64 / busy / bound));
        }
    }
    out["handler_ms"] = summarize(t.handler_ms);
    out["ok"] = json!(ok);
}

/// Enqueues jobs `seq` in `range` in chunks of `--chunk`; returns the seconds it took.
async fn enqueue_range(
    a: &BenchArgs,
    queue: &Queue,
    run: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<f64> {
    let t0 = now_ms();
    let mut start = range.start;
    while start < range.end {
        let end = (start + a.chunk.max(1)).min(range.end);
        let t_enq = now_ms();
        let jobs = (start..end)
            .map(|i| envelope(run, i as u64, t_enq, a.payload_bytes))
            .collect();
        queue.enqueue(jobs).await?;
        start = end;
    }
    Ok((now_ms() - t0) / 1000.0)
}

async fn enqueue_bulk(a: &BenchArgs, queue: &Queue) -> anyhow::Result<serde_json::Value> {
    let run = uuid::Uuid::now_v7().to_string();
    let secs = enqueue_range(a, queue, &run, 0..a.n).await?;
    Ok(
        json!({"enqueued": a.n, "chunk": a.chunk, "enqueue_s": r3(secs),
              "enqueue_jobs_per_s": (a.n as f64 / secs).round()}),
    )
}

#[derive(Debug, Serialize, Deserialize)]
struct ProducerReport {
    sent: usize,
    errors: usize,
    t_first: f64,
    t_last: f64,
    achieved_rate: Option<f64>,
    producer_max_lag_ms: f64,
}

async fn produce_steady(a: &BenchArgs) -> anyhow::Result<ProducerReport> {
    let queue = connect(a).await?;
    let total = (a.rate * a.duration).round() as usize;
    let run = uuid::Uuid::now_v7().to_string();
    let permits = Arc::new(tokio::sync::Semaphore::new(a.max_inflight.max(1)));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = now_ms();
    let (mut t_first, mut t_last, mut max_lag) = (0.0, 0.0, 0.0f64);
    for sent in 0..total {
        let due = t0 + sent as f64 * 1000.0 / a.rate;
        let wait = due - now_ms();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
        }
        let permit = permits.clone().acquire_owned().await?;
        let t = now_ms();
        max_lag = max_lag.max(t - due);
        if sent == 0 {
            t_first = t;
        }
        t_last = t;
        let q = queue.clone();
        let job = envelope(&run, sent as u64, t, a.payload_bytes);
        let errs = errors.clone();
        tasks.spawn(async move {
            if let Err(e) = q.enqueue(vec![job]).await {
                errs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!("leadq bench producer: {e}");
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let span = (t_last - t_first) / 1000.0;
    Ok(ProducerReport {
        sent: total,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        t_first,
        t_last,
        achieved_rate: (span > 0.0).then(|| ((total as f64 - 1.0) / span).round()),
        producer_max_lag_ms: r3(max_lag),
    })
}

async fn steady(a: &BenchArgs, out: &mut serde_json::Value) -> anyhow::Result<()> {
    out["retention"] = json!(retention(a)?);
    let probe = Probe::connect(a).await?;
    let start = probe.snap().await?;
    let queue = connect(a).await?;
    let total = (a.rate * a.duration).round() as usize;
    out["rate"] = json!(a.rate);
    out["duration_s"] = json!(a.duration);
    let every = mem_sample_every(a);
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = every.map(|s| tokio::spawn(sample_memory(probe.clone(), s, go_rx, stop_rx)));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().context("cannot find own executable")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let producer = tokio::spawn(async move {
        let _ = rx.await;
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .args(["--role", "producer"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the producer")?;
        let mut stdout = String::new();
        if let Some(mut s) = child.stdout.take() {
            s.read_to_string(&mut stdout).await?;
        }
        let status = child.wait().await?;
        if !status.success() {
            bail!("producer exited with {status}");
        }
        let line = stdout.lines().last().unwrap_or_default();
        Ok::<ProducerReport, anyhow::Error>(serde_json::from_str(line)?)
    });
    let w = run_worker(a, &queue, total, move || {
        let _ = tx.send(());
        let _ = go_tx.send(());
    })
    .await?;
    let p = producer.await.context("producer task")??;
    let _ = stop_tx.send(());
    let sampled = match sampler {
        Some(task) => Some(task.await.context("memory sampler")?),
        None => None,
    };
    let end = probe.snap().await?;
    out["redis"] = json!({"total": cost(&start, &end, total)});
    let mut mem = serde_json::Map::new();
    mem.insert("used_memory_start".into(), json!(start.used_memory()));
    mem.insert("used_memory_end".into(), json!(end.used_memory()));
    if let (Some(s), Some((mut samples, t0))) = (every, sampled) {
        samples.push(((now_ms() - t0) / 1000.0, end.used_memory()));
        out["mem_sample_s"] = json!(s);
        out["mem_growth_bytes_last_half"] = json!(growth_last_half(&samples));
        out["mem_samples"] = json!(samples
            .iter()
            .map(|&(t, b)| json!([round_to(t, 1), b]))
            .collect::<Vec<_>>());
    }
    let left = probe.leftovers().await?;
    out["mem_bytes_per_retained_job"] = left["bytes_per_retained_job"].clone();
    if let Some(o) = left.as_object() {
        mem.extend(o.clone());
    }
    out["mem"] = json!(mem);
    let t_last_done = w.tally.t_last_done;
    out["sent"] = json!(p.sent);
    out["producer_errors"] = json!(p.errors);
    out["achieved_rate"] = json!(p.achieved_rate);
    out["producer_max_lag_ms"] = json!(p.producer_max_lag_ms);
    work_fields(out, w, total, a);
    out["tail_ms"] = json!(r3(t_last_done - p.t_last));
    if p.errors > 0 || p.sent != total {
        out["ok"] = json!(false);
    }
    out["n"] = json!(total);
    Ok(())
}

/// Drain mode, with the Redis readings around each phase.
async fn drain(a: &BenchArgs, out: &mut serde_json::Value) -> anyhow::Result<()> {
    out["n"] = json!(a.n);
    out["phase"] = json!(a.phase);
    out["backlog"] = json!(a.backlog);
    out["retention"] = json!(retention(a)?);
    let probe = Probe::connect(a).await?;
    let mut redis = serde_json::Map::new();
    // The reading before the queue connects: the enqueue phase includes its start-up, as the
    // harness's does (it reads Redis between processes).
    let first = probe.snap().await?;
    let queue = connect(a).await?;
    // (empty, after enqueue, after the backlog's enqueue)
    let mut enqueued: Option<(InfoSnap, InfoSnap, Option<InfoSnap>)> = None;
    let mut enqueue_cost = None;
    if matches!(a.phase, Phase::All | Phase::Enqueue) {
        let run = uuid::Uuid::now_v7().to_string();
        let secs = enqueue_range(a, &queue, &run, 0..a.n).await?;
        out["enqueued"] = json!(a.n);
        out["chunk"] = json!(a.chunk);
        out["enqueue_s"] = json!(r3(secs));
        out["enqueue_jobs_per_s"] = json!((a.n as f64 / secs).round());
        let queued = probe.snap().await?;
        let c = cost(&first, &queued, a.n);
        redis.insert("enqueue".into(), json!(c));
        enqueue_cost = Some(c);
        let mut backlogged = None;
        if a.backlog > 0 {
            // Behind the measured jobs in the same tenant's FIFO: the worker takes the measured
            // ones first, and the backlog stays in the ready set all through the work phase.
            let range = a.n..a.n + a.backlog;
            let secs = enqueue_range(a, &queue, &run, range).await?;
            let b = probe.snap().await?;
            out["backlog_enqueue_s"] = json!(r3(secs));
            redis.insert(
                "backlog_enqueue".into(),
                json!(cost(&queued, &b, a.backlog)),
            );
            backlogged = Some(b);
        }
        enqueued = Some((first.clone(), queued, backlogged));
    }
    // (before, after the work phase, what finished work left)
    let mut worked: Option<(InfoSnap, InfoSnap, serde_json::Value)> = None;
    if matches!(a.phase, Phase::All | Phase::Work) {
        let before = match &enqueued {
            Some((_, q, b)) => b.clone().unwrap_or_else(|| q.clone()),
            None => first.clone(),
        };
        let w = run_worker(a, &queue, a.n, || {}).await?;
        let after = probe.snap().await?;
        // Backlog jobs the worker had prefetched when the N-th measured one completed ran too,
        // inside this window: their cost is divided among them, not charged to the measured.
        let jobs = w.tally.completed + w.tally.backlog_completed;
        if a.backlog > 0 {
            out["backlog_completed"] = json!(w.tally.backlog_completed);
        }
        work_fields(out, w, a.n, a);
        let c = cost(&before, &after, jobs);
        if let Some(e) = &enqueue_cost {
            redis.insert("total".into(), json!(add_cost(e, &c)));
        }
        redis.insert("work".into(), json!(c));
        let left = probe.leftovers().await?;
        worked = Some((before, after, left));
    } else {
        out["ok"] = json!(true);
    }
    out["redis"] = json!(redis);

    // Memory, now that Redis is idle.
    let last = match (&worked, &enqueued) {
        (Some((_, after, _)), _) => after,
        (None, Some((_, q, b))) => b.as_ref().unwrap_or(q),
        (None, None) => &first,
    };
    let (hb, exact) = probe.histogram_correction(&first, last).await;
    let mut mem = serde_json::Map::new();
    mem.insert(
        "latency_histograms_added".into(),
        json!(last.histograms.saturating_sub(first.histograms)),
    );
    mem.insert("latency_histogram_bytes".into(), json!(hb));
    if !exact {
        mem.insert("uncorrected".into(), json!(true));
    }
    if let Some((empty, queued, backlogged)) = &enqueued {
        mem.insert("used_memory_empty".into(), json!(empty.used_memory()));
        mem.insert(
            "used_memory_after_enqueue".into(),
            json!(queued.used_memory()),
        );
        out["mem_bytes_per_queued_job"] =
            per_item(queued.held_memory(hb) - empty.held_memory(hb), a.n as u64);
        if let Some(b) = backlogged {
            mem.insert("used_memory_after_backlog".into(), json!(b.used_memory()));
            out["mem_bytes_per_backlog_job"] =
                per_item(b.held_memory(hb) - queued.held_memory(hb), a.backlog as u64);
        }
    }
    if let Some((_, after, left)) = &worked {
        mem.insert("used_memory_after_drain".into(), json!(after.used_memory()));
        out["mem_bytes_per_retained_job"] = left["bytes_per_retained_job"].clone();
        if let (Some((empty, _, None)), true) = (&enqueued, a.backlog == 0) {
            // What every finished job leaves until retention trims it: its share of the done
            // set and its dedupe key (plus the queue's few fixed keys).
            let residual = after.held_memory(hb) - empty.held_memory(hb);
            let done_bytes = left["done_zset_bytes"].as_i64().unwrap_or(0);
            let dedupe_keys = left["dedupe_keys"].as_u64().unwrap_or(0);
            mem.insert(
                "residual_bytes_per_job".into(),
                per_item(residual, a.n as u64),
            );
            mem.insert(
                "bytes_per_dedupe_key".into(),
                per_item(residual - done_bytes, dedupe_keys),
            );
        }
        if let Some(o) = left.as_object() {
            mem.extend(o.clone());
        }
    }
    out["mem"] = json!(mem);
    Ok(())
}

/// When steady mode samples `used_memory`, in seconds.
fn mem_sample_every(a: &BenchArgs) -> Option<f64> {
    match a.mem_sample_s {
        Some(s) if s > 0.0 => Some(s),
        Some(_) => None,
        None => (a.duration >= 60.0).then_some(10.0),
    }
}

/// Samples `used_memory` every `every` seconds from `go` until `stop`; returns the samples
/// (seconds since `go`, bytes) and the time of `go`.
async fn sample_memory(
    probe: Probe,
    every: f64,
    go: tokio::sync::oneshot::Receiver<()>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (Vec<(f64, i64)>, f64) {
    let mut samples = Vec::new();
    if go.await.is_err() {
        return (samples, now_ms());
    }
    let t0 = now_ms();
    for k in 0u32.. {
        let wait = t0 + f64::from(k) * every * 1000.0 - now_ms();
        if wait > 0.0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)) => {}
                _ = &mut stop => break,
            }
        }
        match probe.used_memory().await {
            Ok(bytes) => samples.push(((now_ms() - t0) / 1000.0, bytes)),
            Err(e) => eprintln!("leadq bench: memory sample failed: {e}"),
        }
    }
    (samples, t0)
}

/// Fair mode (see [`Mode::Fair`]).
async fn fair(a: &BenchArgs, out: &mut serde_json::Value) -> anyhow::Result<()> {
    let queue = connect(a).await?;
    out["n"] = json!(a.n);
    let e = enqueue_bulk(a, &queue).await?;
    if let (Some(o), Some(e)) = (out.as_object_mut(), e.as_object()) {
        o.extend(e.clone());
    }
    let b_total = (a.rate * a.duration).round() as usize;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (rate, bytes, q) = (a.rate, a.payload_bytes, queue.clone());
    let producer = tokio::spawn(async move {
        let _ = rx.await;
        let run = uuid::Uuid::now_v7().to_string();
        let t0 = now_ms();
        for i in 0..b_total {
            let due = t0 + i as f64 * 1000.0 / rate;
            let wait = due - now_ms();
            if wait > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
            }
            let job = tenant_envelope(TENANT_B, &run, i as u64, now_ms(), bytes);
            q.enqueue(vec![job]).await?;
        }
        Ok::<u64, anyhow::Error>(q.counts(KIND).await?.pending)
    });
    let w = run_worker(a, &queue, a.n + b_total, move || {
        let _ = tx.send(());
    })
    .await?;
    let backlog_left = producer.await.context("tenant B producer")??;
    let lat_b = w.tally.lat_b.clone();
    work_fields(out, w, a.n + b_total, a);
    out["b_rate"] = json!(a.rate);
    out["b_sent"] = json!(b_total);
    out["b_lat_ms"] = summarize(lat_b);
    out["a_backlog_left_when_b_finished_sending"] = json!(backlog_left);
    Ok(())
}

/// Runs the benchmark and prints its JSON line.
pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.role == Role::Producer {
        let p = produce_steady(&a).await?;
        println!("{}", serde_json::to_string(&p)?);
        return Ok(());
    }
    let mut out = base(&a);
    match a.mode {
        Mode::Drain => drain(&a, &mut out).await?,
        Mode::Steady => steady(&a, &mut out).await?,
        Mode::Fair => fair(&a, &mut out).await?,
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(argv: &[&str]) -> BenchArgs {
        Cli::parse_from(std::iter::once("bench").chain(argv.iter().copied())).bench
    }

    const INFO: &str = "# Memory\r\nused_memory:1000\r\nmem_clients_normal:200\r\n\
        used_memory_scripts_eval:100\r\n\r\n\
        # Stats\r\ntotal_reads_processed:10\r\ntotal_writes_processed:9\r\n\
        total_net_input_bytes:1000\r\ntotal_net_output_bytes:5000\r\n\
        # CPU\r\nused_cpu_sys_main_thread:0.500000\r\nused_cpu_user_main_thread:1.000000\r\n\
        # Commandstats\r\n\
        cmdstat_evalsha:calls=2,usec=100,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=30,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setinfo:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
        # Latencystats\r\n\
        latency_percentiles_usec_evalsha:p50=10.0,p99=20.0,p99.9=30.0\r\n\
        latency_percentiles_usec_info:p50=10.0,p99=20.0,p99.9=30.0\r\n";

    #[test]
    fn parses_info_sections_and_commandstats() {
        let s = parse_info(INFO);
        assert_eq!(s.calls["evalsha"], 2);
        assert_eq!(s.calls["client|setinfo"], 2);
        assert_eq!(s.usec["info"], 30);
        assert_eq!(s.used_memory(), 1000);
        assert_eq!(s.histograms, 2);
        assert_eq!(s.held_memory(0), 700);
        assert_eq!(s.held_memory(50), 600);
        assert_eq!(s.num("used_cpu_user_main_thread"), 1.0);
        assert!(!s.kv.contains_key("# Memory"));
        assert!(s.own.is_empty());
    }

    #[test]
    fn cost_is_per_job_and_leaves_out_the_bench_own_commands() {
        let mut before = parse_info(INFO);
        before.own = BTreeMap::from([("info".into(), 4)]);
        let after_text = INFO
            .replace("evalsha:calls=2,usec=100", "evalsha:calls=12,usec=300")
            .replace("info:calls=3,usec=30", "info:calls=6,usec=60")
            .replace("used_cpu_user_main_thread:1.000000", "used_cpu_user_main_thread:1.010000")
            .replace("total_reads_processed:10", "total_reads_processed:20")
            .replace("total_net_output_bytes:5000", "total_net_output_bytes:6000")
            + "cmdstat_hset:calls=30,usec=40,usec_per_call=1.33,rejected_calls=0,failed_calls=0\r\n";
        let mut after = parse_info(&after_text);
        // The probe sent 2 INFOs and a ZCARD between the readings: `before`'s own and one more.
        after.own = BTreeMap::from([("info".into(), 6), ("zcard".into(), 1)]);
        let c = cost(&before, &after, 10);
        // evalsha 10 + hset 30 + info (3 - 2 own) 1; the probe's zcard is not in commandstats.
        assert_eq!(c.cmds_total, 41);
        assert_eq!(c.cmds_per_job, 4.1);
        assert_eq!(c.cmds["evalsha"], 1.0);
        assert_eq!(c.cmds["hset"], 3.0);
        assert_eq!(c.cmds["info"], 0.1);
        assert!(!c.cmds.contains_key("client|setinfo"));
        assert!(!c.cmds.contains_key("zcard"));
        assert_eq!(c.cmd_usec_per_job, (200.0 + 40.0 + 30.0) / 10.0);
        assert_eq!(c.redis_cpu_us_per_job, 1000.0);
        assert_eq!(c.reads_per_job, 1.0);
        assert_eq!(c.writes_per_job, 0.0);
        assert_eq!(c.net_out_bytes_per_job, 100.0);
        assert_eq!(c.jobs, 10);
    }

    #[test]
    fn phases_add_per_job() {
        let a = parse_info(INFO);
        let b = parse_info(&INFO.replace("evalsha:calls=2,usec=100", "evalsha:calls=4,usec=100"));
        let mut own_b = b.clone();
        own_b.own = BTreeMap::from([("info".into(), 1)]);
        let one = cost(&a, &own_b, 2);
        let total = add_cost(&one, &one);
        assert_eq!(total.jobs, 2);
        assert_eq!(total.cmds_per_job, 2.0);
        assert_eq!(total.cmds["evalsha"], 2.0);
        assert_eq!(total.cmds_total, 4);
    }

    #[test]
    fn growth_is_end_minus_the_sample_nearest_the_midpoint() {
        assert_eq!(growth_last_half(&[]), None);
        assert_eq!(growth_last_half(&[(0.0, 5)]), Some(0));
        let s = [
            (0.0, 100),
            (10.0, 200),
            (20.2, 260),
            (30.0, 300),
            (40.5, 310),
        ];
        assert_eq!(growth_last_half(&s), Some(310 - 260));
    }

    #[test]
    fn bytes_per_item() {
        assert_eq!(per_item(1000, 0), serde_json::Value::Null);
        assert_eq!(per_item(1000, 3), json!(333));
        assert_eq!(per_item(-10, 4), json!(-3));
    }

    #[test]
    fn memory_sampling_defaults_to_10_s_for_runs_of_a_minute_or_more() {
        assert_eq!(mem_sample_every(&args(&[])), None);
        assert_eq!(mem_sample_every(&args(&["--duration", "600"])), Some(10.0));
        assert_eq!(
            mem_sample_every(&args(&["--duration", "600", "--mem-sample-s", "0"])),
            None
        );
        assert_eq!(mem_sample_every(&args(&["--mem-sample-s", "2"])), Some(2.0));
    }

    #[test]
    fn retention_is_production_unless_set() {
        let prod = Settings::load(
            &BTreeMap::new(),
            Needs {
                database: false,
                redis: false,
                keys: false,
            },
            &[],
        )
        .map(|s| s.queue)
        .ok();
        let a = args(&[]);
        let r = retention(&a).ok();
        // The test environment may set LEADQ_KEEP_DONE; then both read it.
        if let (Some(prod), Some(r)) = (prod, r) {
            if std::env::vars().all(|(k, _)| !k.starts_with("LEADQ_")) {
                assert_eq!(r.keep_done, prod.keep_done);
                assert_eq!(r.keep_done_secs, prod.keep_done_for.as_secs());
                assert_eq!(r.dedupe_ttl_secs, prod.dedupe_ttl.as_secs());
            }
        }
        let set = args(&[
            "--keep-done",
            "5",
            "--keep-done-secs",
            "6",
            "--dedupe-ttl-secs",
            "7",
        ]);
        let r = retention(&set).ok();
        assert_eq!(
            r,
            Some(Retention {
                keep_done: 5,
                keep_done_secs: 6,
                dedupe_ttl_secs: 7
            })
        );
        let q = queue_settings(
            &set,
            Retention {
                keep_done: 5,
                keep_done_secs: 6,
                dedupe_ttl_secs: 7,
            },
        );
        assert_eq!(q.keep_done, 5);
        assert_eq!(q.keep_done_for, Duration::from_secs(6));
        assert_eq!(q.dedupe_ttl, Duration::from_secs(7));
    }
}
