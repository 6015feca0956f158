//! The harness's worker: one production-shaped apalis worker on the bench queue, and the
//! tally of what it completed.
//!
//! The worker runs with the layers `leadq worker` uses (catch-panic, timeout) under our
//! backend's [`KindRunner`] and [`Upkeep`]. Latency is taken in the [`JobObserver`], which the
//! backend calls after a job is settled in Redis: `t_done` is read once the acknowledgement
//! has returned, and `t_enq` travels in the payload.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::prelude::{Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use futures::future::BoxFuture;
use futures::FutureExt;
use leadq_queue::backend::{Job, JobObserver, JobReport, KindRunner};
use leadq_queue::envelope::JobMeta;
use leadq_queue::upkeep::{new_worker_id, Upkeep};
use leadq_queue::JobError;
use leadq_queue::{Queue, Settled};
use serde_json::json;
use tokio::sync::Notify;

use super::harness::{is_arrival, Payload};
use super::timer::PreciseTimer;
use super::{now_ms, r3, BenchArgs, Mode, SleepTimer, KIND};

/// Nearest-rank summary of latencies in ms.
pub(super) fn summarize(mut v: Vec<f64>) -> serde_json::Value {
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
pub(super) struct Tally {
    t_enq: HashMap<uuid::Uuid, f64>,
    lat: Vec<f64>,
    /// How long the handler of each measured completed job took, in ms.
    handler_ms: Vec<f64>,
    /// Latencies of the jobs that arrived during the drain (fair mode).
    pub(super) lat_b: Vec<f64>,
    pub(super) completed: usize,
    failed: usize,
    /// Backlog jobs (`--backlog`) the worker has started: not measured.
    backlog_ids: HashSet<uuid::Uuid>,
    /// Backlog jobs the worker ran to completion (prefetched before it stopped).
    pub(super) backlog_completed: usize,
    t_first_start: f64,
    pub(super) t_last_done: f64,
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
                    if is_arrival(report.meta.tenant_id) {
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

pub(super) struct WorkerRun {
    pub(super) tally: Tally,
    t_worker_start: f64,
}

/// Runs one worker until `expected` completions (or the timeout). `ready` fires once the
/// worker is registered and about to fetch.
pub(super) async fn run_worker(
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
        Mode::Drain | Mode::E2e => Duration::ZERO,
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

pub(super) fn work_fields(out: &mut serde_json::Value, w: WorkerRun, n: usize, a: &BenchArgs) {
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
