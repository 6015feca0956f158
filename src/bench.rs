//! `leadq bench`: the queue benchmark of `shared/bench-protocol.md`.
//!
//! It runs the real stack (our Redis backend under an apalis worker with the production
//! layers) against the given Redis, so its figures compare with BullMQ's on the same server.
//! Latency is `t_done - t_enq`, where `t_done` is read after the job's acknowledgement has
//! returned from Redis (the observer is called after settling), and `t_enq` travels in the
//! payload. Exactly one JSON line goes to stdout.

use std::collections::HashMap;
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
use leadq_jobs::envelope::{Envelope, JobMeta, SCHEMA_VERSION};
use leadq_jobs::queue::backend::{Job, JobObserver, JobReport, KindRunner};
use leadq_jobs::queue::upkeep::{new_worker_id, Upkeep};
use leadq_jobs::queue::{NewJob, Queue, Settled};
use leadq_jobs::JobError;
use leadq_platform::config::{KindSettings, QueueSettings};
use leadq_platform::keyring::Keyring;
use leadq_platform::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

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
    /// Give up waiting after this many seconds.
    #[arg(long = "timeout-s", default_value_t = 300)]
    timeout_s: u64,
    /// Max outstanding enqueue calls (steady producer).
    #[arg(long = "max-inflight", default_value_t = 64)]
    max_inflight: usize,
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

fn queue_settings(a: &BenchArgs) -> QueueSettings {
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
        dedupe_ttl: Duration::from_secs(3600),
        keep_done: 1000,
        keep_done_for: Duration::from_secs(3600),
        dead_letter_ttl: Duration::from_secs(86_400),
    }
}

async fn connect(a: &BenchArgs) -> anyhow::Result<Queue> {
    let url = Secret::new(format!("redis://{}:{}/", a.host, a.port));
    // The bench signs and verifies like production. Its phases run as separate processes (the
    // harness's enqueue/work split, the steady producer child), so the key is derived from the
    // queue name: a benchmark key, not a secret.
    let key: [u8; 32] = Sha256::digest(format!("leadq-bench:{}", a.queue)).into();
    let signer = leadq_jobs::signing::Signer::new(Keyring::single("bench", key));
    Queue::connect(&url, queue_settings(a), signer)
        .await
        .context("Failed to connect to Redis")
}

fn handler_name(a: &BenchArgs) -> String {
    if a.sleep_ms > 0 {
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
        "runtime": "rust tokio apalis-core 1.0",
        "mode": a.mode,
        "handler": handler_name(a),
        "c": a.c,
        "payload_bytes": a.payload_bytes,
    })
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
    /// Latencies of tenant B's jobs (fair mode).
    lat_b: Vec<f64>,
    completed: usize,
    failed: usize,
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
        let t_enq = tally.t_enq.remove(&report.meta.job_id);
        match report.settled {
            Settled::Completed => {
                tally.completed += 1;
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
}

async fn bench_handler(job: Job<Payload>, deps: Data<BenchDeps>) -> Result<(), JobError> {
    {
        let mut tally = deps.tally.lock().unwrap_or_else(|p| p.into_inner());
        if tally.t_first_start == 0.0 {
            tally.t_first_start = now_ms();
        }
        tally.t_enq.insert(job.meta.job_id, job.payload.t_enq);
    }
    if !deps.sleep.is_zero() {
        tokio::time::sleep(deps.sleep).await;
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
    let timeout = Duration::from_secs(a.timeout_s);
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

fn work_fields(out: &mut serde_json::Value, w: WorkerRun, n: usize) {
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
    out["ok"] = json!(ok);
}

async fn enqueue_bulk(a: &BenchArgs, queue: &Queue) -> anyhow::Result<serde_json::Value> {
    let run = uuid::Uuid::now_v7().to_string();
    let t0 = now_ms();
    let mut start = 0;
    while start < a.n {
        let end = (start + a.chunk).min(a.n);
        let t_enq = now_ms();
        let jobs = (start..end)
            .map(|i| envelope(&run, i as u64, t_enq, a.payload_bytes))
            .collect();
        queue.enqueue(jobs).await?;
        start = end;
    }
    let secs = (now_ms() - t0) / 1000.0;
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
    let queue = connect(a).await?;
    let total = (a.rate * a.duration).round() as usize;
    out["rate"] = json!(a.rate);
    out["duration_s"] = json!(a.duration);
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
    })
    .await?;
    let p = producer.await.context("producer task")??;
    let t_last_done = w.tally.t_last_done;
    out["sent"] = json!(p.sent);
    out["producer_errors"] = json!(p.errors);
    out["achieved_rate"] = json!(p.achieved_rate);
    out["producer_max_lag_ms"] = json!(p.producer_max_lag_ms);
    work_fields(out, w, total);
    out["tail_ms"] = json!(r3(t_last_done - p.t_last));
    if p.errors > 0 || p.sent != total {
        out["ok"] = json!(false);
    }
    out["n"] = json!(total);
    Ok(())
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
    work_fields(out, w, a.n + b_total);
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
        Mode::Drain => {
            out["n"] = json!(a.n);
            out["phase"] = json!(a.phase);
            let queue = connect(&a).await?;
            if matches!(a.phase, Phase::All | Phase::Enqueue) {
                let e = enqueue_bulk(&a, &queue).await?;
                if let (Some(o), Some(e)) = (out.as_object_mut(), e.as_object()) {
                    o.extend(e.clone());
                }
            }
            if matches!(a.phase, Phase::All | Phase::Work) {
                let w = run_worker(&a, &queue, a.n, || {}).await?;
                work_fields(&mut out, w, a.n);
            } else {
                out["ok"] = json!(true);
            }
        }
        Mode::Steady => steady(&a, &mut out).await?,
        Mode::Fair => fair(&a, &mut out).await?,
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
