//! The queue engine under a test handler: retries, dead letters, big due bursts.
//!
//! These tests run our Redis backend under a real apalis worker, with the production layers,
//! and a handler the test controls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::prelude::{Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use leadq_platform::config::{KindSettings, QueueSettings};
use leadq_platform::keyring::Keyring;
use leadq_platform::secret::Secret;
use leadq_queue::backend::{Job, JobObserver, JobReport, KindRunner};
use leadq_queue::envelope::{Envelope, JobMeta};
use leadq_queue::signing::Signer;
use leadq_queue::upkeep::Upkeep;
use leadq_queue::JobError;
use leadq_queue::{NewJob, Priority, Queue, Settled};
use leadq_testkit::{queue_prefix, wait_for};
use tokio::sync::oneshot;

const KIND: &str = "test_job";

type Handler =
    Arc<dyn Fn(Job<serde_json::Value>) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync>;

async fn dispatch(job: Job<serde_json::Value>, h: Data<Handler>) -> Result<(), JobError> {
    (h.as_ref())(job).await
}

#[derive(Default)]
struct Seen {
    starts: Vec<(uuid::Uuid, u32, Instant)>,
    reports: Vec<JobReport>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

impl JobObserver for Recorder {
    fn started(&self, meta: &JobMeta) -> BoxFuture<'static, ()> {
        self.0
            .lock()
            .unwrap()
            .starts
            .push((meta.job_id, meta.attempt, Instant::now()));
        futures::future::ready(()).boxed()
    }
    fn finished(&self, report: JobReport) -> BoxFuture<'static, ()> {
        self.0.lock().unwrap().reports.push(report);
        futures::future::ready(()).boxed()
    }
}

fn settings(prefix: &str, max_attempts: u32, base_ms: u64) -> QueueSettings {
    let mut kinds = std::collections::BTreeMap::new();
    kinds.insert(
        KIND,
        KindSettings {
            concurrency: 20,
            max_attempts,
            backoff_base: Duration::from_millis(base_ms),
            backoff_max: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        },
    );
    QueueSettings {
        prefix: prefix.into(),
        lease: Duration::from_secs(3),
        max_lease_expiries: 2,
        shutdown_timeout: Duration::from_secs(5),
        kinds,
        dedupe_ttl: Duration::from_secs(600),
        keep_done: 100,
        keep_done_for: Duration::from_secs(3600),
        dead_letter_ttl: Duration::from_secs(86_400),
        shards: 1,
        redis_cluster: false,
    }
}

async fn queue(s: QueueSettings) -> Queue {
    #[allow(clippy::disallowed_methods)]
    let url = std::env::var("REDIS_URL").expect("REDIS_URL (run through scripts/test)");
    let signer = Signer::new(Keyring::random("test"));
    Queue::connect(&Secret::new(url), s, signer).await.unwrap()
}

fn job(i: usize, run_at: Option<chrono::DateTime<Utc>>) -> NewJob {
    NewJob {
        envelope: Envelope::new(uuid::Uuid::nil(), "test", KIND, serde_json::json!({"i": i}))
            .message_id(format!("m-{i}"))
            .correlation_id(format!("c-{i}")),
        run_at,
        priority: Default::default(),
    }
}

/// A worker under test: runs until `stop` is called.
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    restarts: Arc<Mutex<usize>>,
}

fn start(queue: &Queue, handler: Handler, observer: Recorder) -> Running {
    start_as("w-test", queue, handler, observer)
}

/// A worker, once it has registered (so it is idle, waiting for work, when this returns).
async fn start_registered(queue: &Queue, handler: Handler, observer: Recorder) -> Running {
    let w = start(queue, handler, observer);
    wait_for("the worker to start", Duration::from_secs(10), || async {
        (!queue.workers(&[KIND]).await.unwrap().is_empty()).then_some(())
    })
    .await;
    w
}

/// A worker process of its own id (several of them stand for several worker hosts).
fn start_as(id: &str, queue: &Queue, handler: Handler, observer: Recorder) -> Running {
    let runner = KindRunner::new(queue.clone(), KIND, id, 20, Arc::new(observer));
    let upkeep = Upkeep::new(vec![runner.clone()]);
    let restarts = Arc::new(Mutex::new(0));
    let seen = restarts.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let q = queue.clone();
    let task = tokio::spawn(async move {
        q.publish_policy(KIND).await.unwrap();
        let (utx, urx) = oneshot::channel::<()>();
        let up = tokio::spawn(upkeep.run(async move {
            let _ = urx.await;
        }));
        let r = runner.clone();
        Monitor::new()
            .register(move |n| {
                *seen.lock().unwrap() = n;
                WorkerBuilder::new(format!("test#{n}"))
                    .backend(r.backend())
                    .data(handler.clone())
                    .concurrency(20)
                    .layer(CatchPanicLayer::with_panic_handler(
                        |_: &Box<dyn std::any::Any + Send>| {
                            JobError::transient("panic", anyhow::anyhow!("panicked"))
                        },
                    ))
                    .timeout(Duration::from_secs(10))
                    .build(dispatch)
            })
            .with_terminator(async { tokio::time::sleep(Duration::from_secs(5)).await })
            .run_with_signal(async move {
                let _ = stopped.await;
                Ok(())
            })
            .await
            .unwrap();
        runner.release_all().await;
        let _ = utx.send(());
        let _ = up.await;
    });
    Running {
        stop,
        task,
        restarts,
    }
}

impl Running {
    async fn stop(self) -> usize {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        let n = *self.restarts.lock().unwrap();
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transiently_failing_job_is_retried_with_growing_delays_then_dead_lettered() {
    let q = queue(settings(&queue_prefix(), 4, 300)).await;
    let handler: Handler = Arc::new(|_job| {
        async {
            Err(JobError::transient(
                "crm_unavailable",
                anyhow::anyhow!("503 from upstream"),
            ))
        }
        .boxed()
    });
    let rec = Recorder::default();
    let w = start(&q, handler, rec.clone());
    q.enqueue(vec![job(1, None)]).await.unwrap();
    let dead = wait_for("the dead letter", Duration::from_secs(20), || async {
        let d = q.dead_letters(KIND, 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(w.stop().await, 0, "the worker never restarted");

    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "max_attempts");
    assert_eq!(dead[0].last_error_code, "crm_unavailable");
    assert_eq!(dead[0].attempts, 4);
    assert_eq!(dead[0].envelope.as_ref().unwrap().message_id, "m-1");

    let (starts, reports) = {
        let seen = rec.0.lock().unwrap();
        (seen.starts.clone(), seen.reports.clone())
    };
    let attempts: Vec<u32> = starts.iter().map(|(_, a, _)| *a).collect();
    assert_eq!(attempts, vec![1, 2, 3, 4]);
    let gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| w[1].2.duration_since(w[0].2))
        .collect();
    // Equal jitter: retry k waits between base*2^(k-1)/2 and base*2^(k-1).
    for (k, gap) in gaps.iter().enumerate() {
        let full = 300 * (1u64 << k);
        assert!(
            *gap >= Duration::from_millis(full / 2),
            "retry {} came after {gap:?}, before {}ms",
            k + 1,
            full / 2
        );
    }
    assert!(gaps[2] > gaps[0], "delays grow: {gaps:?}");
    let outcomes: Vec<_> = reports.iter().map(|r| r.settled.clone()).collect();
    assert!(matches!(
        outcomes[..3],
        [
            Settled::Retried { .. },
            Settled::Retried { .. },
            Settled::Retried { .. }
        ]
    ));
    assert_eq!(
        outcomes[3],
        Settled::Dead {
            reason: "max_attempts".into()
        }
    );
    let c = q.counts(KIND).await.unwrap();
    assert_eq!(
        (c.dead, c.retries, c.pending, c.scheduled, c.running),
        (1, 3, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_dead_lettered_at_once_and_a_rate_limit_uses_no_attempt() {
    let q = queue(settings(&queue_prefix(), 5, 100)).await;
    let limited_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler: Handler = Arc::new(move |job| {
        let first_time =
            job.payload["i"] == 2 && !limited_once.swap(true, std::sync::atomic::Ordering::SeqCst);
        async move {
            match job.payload["i"].as_u64() {
                Some(1) => Err(JobError::permanent(
                    "invalid_payload",
                    anyhow::anyhow!("bad"),
                )),
                Some(2) if first_time => Err(JobError::RateLimited {
                    code: "crm_rate_limited",
                    retry_after: Duration::from_millis(300),
                }),
                _ => Ok(()),
            }
        }
        .boxed()
    });
    let rec = Recorder::default();
    let w = start(&q, handler, rec.clone());
    q.enqueue(vec![job(1, None), job(2, None)]).await.unwrap();
    wait_for("both jobs settled", Duration::from_secs(10), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.dead == 1 && c.done == 1).then_some(())
    })
    .await;
    w.stop().await;
    let dead = q.dead_letters(KIND, 10).await.unwrap();
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].attempts),
        ("invalid_payload", 1)
    );
    let reports = rec.0.lock().unwrap().reports.clone();
    // The rate-limited job ran twice, both times as attempt 1: the snooze used no attempt.
    let second: Vec<u32> = reports
        .iter()
        .filter(|r| r.meta.message_id == "m-2")
        .map(|r| r.meta.attempt)
        .collect();
    assert_eq!(second, vec![1, 1]);
    assert_eq!(q.counts(KIND).await.unwrap().rate_limited, 1);
}

/// Redis `MONITOR`, counting the commands whose line contains every one of `needles` (in
/// lower case: the line is compared in lower case).
struct CommandTap {
    count: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CommandTap {
    async fn start(needles: Vec<String>) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        #[allow(clippy::disallowed_methods)]
        let url = std::env::var("REDIS_URL").expect("REDIS_URL (run through scripts/test)");
        let addr = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+OK"));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let line = line.to_ascii_lowercase();
                if needles.iter().all(|n| line.contains(n.as_str())) {
                    seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Self { count, task }
    }

    /// The count so far; the connection closes.
    async fn stop(self) -> usize {
        // Lines already sent are read before the count is taken.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.task.abort();
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_waits_for_a_wake_up_instead_of_fetching_from_an_empty_queue() {
    let prefix = queue_prefix();
    let q = queue(settings(&prefix, 3, 100)).await;
    let handler: Handler = Arc::new(|_job| async { Ok(()) }.boxed());
    let rec = Recorder::default();
    let w = start_registered(&q, handler, rec.clone()).await;
    // Calls of the fetch script on this queue: the only script given a worker's suspect key.
    let tap = CommandTap::start(vec![
        "\"evalsha\"".into(),
        format!("{{{prefix}:{KIND}}}:suspect:"),
    ])
    .await;
    // Low load: each job arrives when the worker has gone idle after the one before.
    let began = Instant::now();
    for i in 0..20 {
        q.enqueue(vec![job(i, None)]).await.unwrap();
        wait_for("the job to finish", Duration::from_secs(10), || async {
            (rec.0.lock().unwrap().reports.len() > i).then_some(())
        })
        .await;
    }
    let fetches = tap.stop().await;
    let idle_waits = began.elapsed().as_millis() / 500 + 1;
    w.stop().await;
    // One fetch per job, and one after each idle wait that ran out (half a second each; a
    // slow machine has more of them). A worker that asked again as soon as it had taken the
    // last job, only to find the queue empty, needed two per job.
    assert!(
        fetches >= 20 && fetches as u128 <= 22 + idle_waits,
        "{fetches} fetches for 20 jobs that came one at a time, with at most {idle_waits} idle \
         waits running out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_jobs_due_at_once_drain_without_the_worker_dying() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    // 10,000 ready now, and 10,000 scheduled to fall due at the same instant: far above the
    // ~8,000 that kill apalis-redis's fetch (Lua unpack limit).
    let due = Utc::now() + chrono::Duration::seconds(6);
    let jobs: Vec<NewJob> = (0..20_000)
        .map(|i| job(i, (i % 2 == 0).then_some(due)))
        .collect();
    q.enqueue(jobs).await.unwrap();
    let c = q.counts(KIND).await.unwrap();
    assert_eq!((c.pending, c.scheduled), (10_000, 10_000));
    // Let the 10,000 fall due together before any worker looks.
    let until_due = (due - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_due + Duration::from_millis(100)).await;

    let handler: Handler = Arc::new(|_| async { Ok(()) }.boxed());
    let w = start(&q, handler, Recorder::default());
    wait_for("20,000 completions", Duration::from_secs(120), || async {
        (q.counts(KIND).await.unwrap().done == 20_000).then_some(())
    })
    .await;
    assert_eq!(w.stop().await, 0, "the worker never died and restarted");
    let c = q.counts(KIND).await.unwrap();
    assert_eq!(
        (c.pending, c.scheduled, c.running, c.dead, c.failed),
        (0, 0, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_transient_failure_not_a_dead_worker() {
    let q = queue(settings(&queue_prefix(), 2, 100)).await;
    let handler: Handler = Arc::new(|job| {
        async move {
            if job.payload["i"] == 1 {
                panic!("boom");
            }
            Ok(())
        }
        .boxed()
    });
    let w = start(&q, handler, Recorder::default());
    q.enqueue(vec![job(1, None), job(2, None)]).await.unwrap();
    wait_for("one dead, one done", Duration::from_secs(10), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.dead == 1 && c.done == 1).then_some(())
    })
    .await;
    assert_eq!(w.stop().await, 0);
    let dead = q.dead_letters(KIND, 1).await.unwrap();
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].last_error_code.as_str()),
        ("max_attempts", "panic")
    );
}

/// A handler that fails job `i` = 0 permanently while `failing` is set, and runs the rest.
fn first_job_fails(failing: Arc<std::sync::atomic::AtomicBool>) -> Handler {
    Arc::new(move |job| {
        let fail = failing.load(std::sync::atomic::Ordering::SeqCst) && job.payload["i"] == 0;
        async move {
            if fail {
                Err(JobError::permanent(
                    "invalid_payload",
                    anyhow::anyhow!("bad"),
                ))
            } else {
                Ok(())
            }
        }
        .boxed()
    })
}

fn tenant_job(tenant: uuid::Uuid, i: usize) -> NewJob {
    let mut j = job(i, None);
    j.envelope.tenant_id = tenant;
    j.envelope.message_id = format!("m-{tenant}-{i}");
    j
}

/// Where tenant B's jobs start among all starts, after tenant A queued `backlog` first.
async fn b_positions(weight_b: Option<f64>, backlog: usize, b_jobs: usize) -> Vec<usize> {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    if let Some(w) = weight_b {
        q.set_tenant_weight(KIND, b, w).await.unwrap();
    }
    let flood: Vec<NewJob> = (0..backlog).map(|i| tenant_job(a, i)).collect();
    q.enqueue(flood).await.unwrap();
    q.enqueue((0..b_jobs).map(|i| tenant_job(b, i)).collect())
        .await
        .unwrap();
    let tenants: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    let seen = tenants.clone();
    let handler: Handler = Arc::new(move |job| {
        seen.lock().unwrap().push(job.meta.tenant_id);
        async { Ok(()) }.boxed()
    });
    let w = start(&q, handler, Recorder::default());
    wait_for("tenant B's jobs", Duration::from_secs(30), || async {
        let t = tenants.lock().unwrap();
        (t.iter().filter(|t| **t == b).count() == b_jobs).then_some(())
    })
    .await;
    w.stop().await;
    let t = tenants.lock().unwrap();
    t.iter()
        .enumerate()
        .filter(|(_, t)| **t == b)
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_the_queue_does_not_starve_another() {
    // A queued 5,000 jobs before B queued 20: B is served alongside A, not after it.
    let pos = b_positions(None, 5_000, 20).await;
    let last = *pos.last().unwrap();
    // Equal weights interleave one for one (plus the batch already fetched before B's
    // arrived): B's 20 are done within the first ~60 runs, not after 5,000.
    assert!(
        last < 100,
        "B's last job started at position {last}: {pos:?}"
    );
    // Weighted: B at 4 gets four runs for each of A's.
    let pos = b_positions(Some(4.0), 5_000, 40).await;
    let last = *pos.last().unwrap();
    assert!(
        last < 80,
        "B (weight 4) finished at position {last}: {pos:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_jobs_and_dead_letters_are_trimmed_by_age_with_their_data() {
    let mut s = settings(&queue_prefix(), 1, 100);
    s.keep_done_for = Duration::from_millis(1500);
    s.dead_letter_ttl = Duration::from_millis(1500);
    let prefix = s.prefix.clone();
    let q = queue(s).await;
    let handler = first_job_fails(Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let w = start(&q, handler, Recorder::default());
    // One of high and one of low priority: their priority field goes with them too.
    let jobs = (0..6)
        .map(|i| {
            let mut j = job(i, None);
            j.priority = match i {
                1 => Priority::High,
                2 => Priority::Low,
                _ => Priority::Normal,
            };
            j
        })
        .collect();
    q.enqueue(jobs).await.unwrap();
    wait_for("five done, one dead", Duration::from_secs(10), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.done == 5 && c.dead == 1).then_some(())
    })
    .await;
    #[allow(clippy::disallowed_methods)]
    let url = std::env::var("REDIS_URL").unwrap();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = |name: &str| format!("{{{prefix}:{KIND}}}:{name}");
    let kept: u64 = redis::cmd("ZCARD")
        .arg(key("done"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, 5);
    // Past retention: the reaper deletes the dead letter, the next completion trims `done`.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    q.enqueue(vec![job(100, None)]).await.unwrap();
    wait_for("trimmed", Duration::from_secs(10), || async {
        let c = q.counts(KIND).await.unwrap();
        let kept: u64 = redis::cmd("ZCARD")
            .arg(key("done"))
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        (c.done == 6 && kept == 1 && c.dead == 0).then_some(())
    })
    .await;
    w.stop().await;
    // Nothing of a finished job is left behind.
    let (jobs, dead_data): (u64, u64) = redis::pipe()
        .hlen(key("jobs"))
        .hlen(key("dead_data"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((jobs, dead_data), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_reorder_a_tenants_own_jobs_without_taking_a_larger_share() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // A queues 30 low, then 30 normal, then 30 high jobs; B queues 30 normal ones after that.
    let mut jobs = Vec::new();
    for (base, priority) in [
        (0, Priority::Low),
        (100, Priority::Normal),
        (200, Priority::High),
    ] {
        for i in base..base + 30 {
            let mut j = tenant_job(a, i);
            j.priority = priority;
            jobs.push(j);
        }
    }
    q.enqueue(jobs).await.unwrap();
    q.enqueue((300..330).map(|i| tenant_job(b, i)).collect())
        .await
        .unwrap();
    let order: Arc<Mutex<Vec<(uuid::Uuid, u64)>>> = Arc::default();
    let seen = order.clone();
    let handler: Handler = Arc::new(move |job| {
        let i = job.payload["i"].as_u64().unwrap();
        seen.lock().unwrap().push((job.meta.tenant_id, i));
        async { Ok(()) }.boxed()
    });
    let w = start(&q, handler, Recorder::default());
    wait_for("all 120 jobs", Duration::from_secs(30), || async {
        (order.lock().unwrap().len() == 120).then_some(())
    })
    .await;
    w.stop().await;
    let order = order.lock().unwrap();
    let a_run: Vec<u64> = order
        .iter()
        .filter(|(t, _)| *t == a)
        .map(|(_, i)| *i)
        .collect();
    let class = |i: u64| i / 100; // 0 low, 1 normal, 2 high
                                  // A's own jobs ran high, then normal, then low, whatever order they were queued in
                                  // (allowing for the few jobs in flight together when the handler records them).
    let last_high = a_run.iter().rposition(|i| class(*i) == 2).unwrap();
    let first_low = a_run.iter().position(|i| class(*i) == 0).unwrap();
    let first_normal = a_run.iter().position(|i| class(*i) == 1).unwrap();
    assert!(
        last_high < first_low && first_normal < first_low && last_high < 40,
        "A ran in this order: {a_run:?}"
    );
    // FIFO within a priority.
    let highs: Vec<u64> = a_run.iter().copied().filter(|i| class(*i) == 2).collect();
    let mut sorted = highs.clone();
    sorted.sort_unstable();
    let displaced = highs.iter().zip(&sorted).filter(|(x, y)| x != y).count();
    assert!(displaced <= 4, "high jobs out of order: {highs:?}");
    // Marking its work high bought A no larger share: B's 30 ran interleaved with A's first
    // 30, not after A's 90.
    let b_last = order.iter().rposition(|(t, _)| *t == b).unwrap();
    eprintln!("B last ran at position {b_last} of 120");
    assert!(b_last < 75, "B's last job ran at position {b_last} of 120");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tenant_keeps_its_jobs_while_others_run_and_gets_them_back_on_resume() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    q.pause_tenant(KIND, a).await.unwrap();
    q.enqueue((0..10).map(|i| tenant_job(a, i)).collect())
        .await
        .unwrap();
    q.enqueue((10..20).map(|i| tenant_job(b, i)).collect())
        .await
        .unwrap();
    let ran: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    let seen = ran.clone();
    let handler: Handler = Arc::new(move |job| {
        seen.lock().unwrap().push(job.meta.tenant_id);
        async { Ok(()) }.boxed()
    });
    let w = start(&q, handler, Recorder::default());
    wait_for("B's 10 jobs", Duration::from_secs(10), || async {
        let n = ran.lock().unwrap().iter().filter(|t| **t == b).count();
        (n == 10).then_some(())
    })
    .await;
    // Give the worker time to come round to A's jobs: it must not run them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !ran.lock().unwrap().contains(&a),
        "a paused tenant's job ran"
    );
    let st = q.tenant_state(KIND, a).await.unwrap();
    assert!(st.paused && st.held == 10, "{st:?}");
    // Enqueueing while paused still works, and the job is held too.
    q.enqueue(vec![tenant_job(a, 10)]).await.unwrap();
    let c = q.resume_tenant(KIND, a).await.unwrap();
    assert!(c.resumed >= 10 && c.held == 0, "{c:?}");
    wait_for(
        "A's 11 jobs after resume",
        Duration::from_secs(10),
        || async {
            let n = ran.lock().unwrap().iter().filter(|t| **t == a).count();
            (n == 11).then_some(())
        },
    )
    .await;
    w.stop().await;
    let c = q.counts(KIND).await.unwrap();
    assert_eq!((c.done, c.pending, c.held), (21, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cap_holds_across_workers_and_leaves_the_rest_to_others() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    q.set_tenant_cap(KIND, a, Some(3)).await.unwrap();
    q.enqueue((0..40).map(|i| tenant_job(a, i)).collect())
        .await
        .unwrap();
    q.enqueue((100..140).map(|i| tenant_job(b, i)).collect())
        .await
        .unwrap();
    #[derive(Default)]
    struct Tally {
        now_a: usize,
        max_a: usize,
        max_b: usize,
        now_b: usize,
        done: Vec<uuid::Uuid>,
    }
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let t = tally.clone();
    let handler: Handler = Arc::new(move |job| {
        let t = t.clone();
        let tenant = job.meta.tenant_id;
        async move {
            {
                let mut g = t.lock().unwrap();
                if tenant == a {
                    g.now_a += 1;
                    g.max_a = g.max_a.max(g.now_a);
                } else {
                    g.now_b += 1;
                    g.max_b = g.max_b.max(g.now_b);
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
            let mut g = t.lock().unwrap();
            if tenant == a {
                g.now_a -= 1;
            } else {
                g.now_b -= 1;
            }
            g.done.push(tenant);
            Ok(())
        }
        .boxed()
    });
    // Two workers of 20 slots each: the cap is on the tenant, not per worker.
    let w1 = start_as("w-cap-1", &q, handler.clone(), Recorder::default());
    let w2 = start_as("w-cap-2", &q, handler, Recorder::default());
    wait_for("all 80 jobs", Duration::from_secs(30), || async {
        (tally.lock().unwrap().done.len() == 80).then_some(())
    })
    .await;
    w1.stop().await;
    w2.stop().await;
    let (max_a, max_b, done) = {
        let g = tally.lock().unwrap();
        (g.max_a, g.max_b, g.done.clone())
    };
    assert_eq!(
        max_a, 3,
        "tenant A ran {max_a} jobs at once under a cap of 3"
    );
    // B used the slots A could not: it ran many at once and finished long before A.
    assert!(max_b > 10, "B ran at most {max_b} at once");
    let b_last = done.iter().rposition(|t| *t == b).unwrap();
    eprintln!("cap: A max {max_a}, B max {max_b}, B last finished at {b_last} of 80");
    assert!(
        b_last < 60,
        "B's last job finished at position {b_last} of 80"
    );
    let st = q.tenant_state(KIND, a).await.unwrap();
    assert_eq!((st.cap, st.running, st.held), (Some(3), 0, 0), "{st:?}");
    // Removing the cap is immediate.
    q.set_tenant_cap(KIND, a, None).await.unwrap();
    assert_eq!(q.tenant_state(KIND, a).await.unwrap().cap, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_shard_wakes_the_workers_where_they_wait() {
    let prefix = queue_prefix();
    let mut s = settings(&prefix, 3, 100);
    s.shards = 4;
    let q = queue(s).await;
    let tenant = std::iter::repeat_with(uuid::Uuid::new_v4)
        .find(|t| q.shard_of(t) != 0)
        .unwrap();
    let handler: Handler = Arc::new(|job| {
        async move {
            if job.meta.attempt == 1 {
                Err(JobError::transient(
                    "crm_unavailable",
                    anyhow::anyhow!("503 from upstream"),
                ))
            } else {
                Ok(())
            }
        }
        .boxed()
    });
    let w = start_registered(&q, handler, Recorder::default()).await;
    // Idle workers wait on shard 0's wake list: a blocking wait cannot span Cluster slots.
    let tap = CommandTap::start(vec![
        "\"lpush\"".into(),
        format!("\"{{{prefix}:{KIND}}}:wake\""),
    ])
    .await;
    q.enqueue(vec![tenant_job(tenant, 1)]).await.unwrap();
    wait_for("the retry to succeed", Duration::from_secs(10), || async {
        (q.counts(KIND).await.unwrap().done == 1).then_some(())
    })
    .await;
    let wakes = tap.stop().await;
    w.stop().await;
    // The enqueue's wake-up, and the ack's that scheduled the retry (so a waiting worker
    // learns when it is due), each passed on from the job's shard to shard 0's list.
    assert!(wakes >= 2, "{wakes} wake-ups reached shard 0's list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_queue_runs_counts_pages_dead_letters_and_controls_tenants_across_shards() {
    let mut s = settings(&queue_prefix(), 1, 100);
    s.shards = 4;
    let q = queue(s).await;
    let tenants: Vec<uuid::Uuid> = (0..8).map(|_| uuid::Uuid::new_v4()).collect();
    let shards: std::collections::BTreeSet<u16> = tenants.iter().map(|t| q.shard_of(t)).collect();
    assert!(shards.len() >= 2, "{shards:?}");
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let handler = first_job_fails(failing.clone());
    let w = start(&q, handler, Recorder::default());
    for t in &tenants {
        q.enqueue((0..10).map(|i| tenant_job(*t, i)).collect())
            .await
            .unwrap();
    }
    wait_for("72 done, 8 dead", Duration::from_secs(20), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.done == 72 && c.dead == 8).then_some(())
    })
    .await;
    // Paging through the dead letters of every shard, newest first, three at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = q
            .dead_letter_page(KIND, &Default::default(), cursor.as_deref(), 3)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|d| (d.dead_at, d.job_id)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {seen:?}"
    );
    let ids: Vec<uuid::Uuid> = seen.iter().map(|(_, id)| *id).collect();
    let one = q.dead_letter(KIND, ids[0]).await.unwrap();
    assert!(one.is_some());
    // Re-driven from every shard, they run (the handler has stopped failing).
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(q.redrive(KIND, &ids, &mut |_, _| {}).await.unwrap(), 8);
    wait_for("80 done, none dead", Duration::from_secs(20), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.done == 80 && c.dead == 0).then_some(())
    })
    .await;
    // A tenant of a shard other than 0 is paused and resumed.
    let t = *tenants.iter().find(|t| q.shard_of(t) != 0).unwrap();
    q.pause_tenant(KIND, t).await.unwrap();
    q.enqueue((100..105).map(|i| tenant_job(t, i)).collect())
        .await
        .unwrap();
    wait_for("five held", Duration::from_secs(10), || async {
        let st = q.tenant_state(KIND, t).await.unwrap();
        (st.held == 5).then_some(())
    })
    .await;
    assert_eq!(q.counts(KIND).await.unwrap().done, 80);
    q.resume_tenant(KIND, t).await.unwrap();
    wait_for("85 done", Duration::from_secs(10), || async {
        (q.counts(KIND).await.unwrap().done == 85).then_some(())
    })
    .await;
    w.stop().await;
}
