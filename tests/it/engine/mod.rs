//! The queue engine under a test handler: retries, dead letters, big due bursts.
//!
//! These tests run our Redis backend under a real apalis worker, with the production layers,
//! and a handler the test controls. This file is the harness; [`runs`] tests what happens to
//! one job (retries, dead letters, wake-ups, due bursts, trimming), [`tenants`] how tenants
//! share the queue (fairness, priorities, pause, caps, shards), [`console_reads`] the reads and
//! records the web console uses (locate a job, tenants' backlog, completions, records).

mod console_reads;
mod lost_replies;
mod runs;
mod suspects;
mod tenants;

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
        worker_kinds: vec![KIND],
        dedupe_ttl: Duration::from_secs(600),
        keep_done: 100,
        keep_done_for: Duration::from_secs(3600),
        dead_letter_ttl: Duration::from_secs(86_400),
        shards: 1,
        redis_cluster: false,
        redis_tls: Default::default(),
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
    start_with(id, queue, handler, observer, 20)
}

/// A worker of its own id running up to `concurrency` jobs at once.
fn start_with(
    id: &str,
    queue: &Queue,
    handler: Handler,
    observer: Recorder,
    concurrency: usize,
) -> Running {
    let runner = KindRunner::new(queue.clone(), KIND, id, concurrency, Arc::new(observer));
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
                    .concurrency(concurrency)
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
