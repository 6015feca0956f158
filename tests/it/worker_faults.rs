//! Worker processes under faults, with real processes:
//! - a job that kills its worker every time is dead-lettered as `poisoned` after
//!   `LEADQ_MAX_LEASE_EXPIRIES` leases, and the jobs that shared the process with it complete;
//! - worker hosts whose clocks are 2 s ahead and 2 s behind (libfaketime) share a queue with
//!   jobs longer than a lease, and no job runs twice: leases use the Redis clock.
//!
//! The worker is this test binary run again (`worker_process`, ignored unless asked for by
//! name): our Redis backend under a real apalis worker and the upkeep loop, with a handler that
//! sleeps, counts its runs in Redis, and aborts the process on a job marked `crash`. leadq
//! itself has no such handler.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use leadq_platform::config::{KindSettings, QueueSettings};
use leadq_platform::keyring::Keyring;
use leadq_platform::secret::Secret;
use leadq_queue::backend::{Job, KindRunner, NoObserver};
use leadq_queue::envelope::Envelope;
use leadq_queue::signing::Signer;
use leadq_queue::upkeep::{self, Upkeep};
use leadq_queue::JobError;
use leadq_queue::{NewJob, Queue};
use leadq_testkit::{queue_prefix, wait_for};

const KIND: &str = "poison_test";
const MAX_EXPIRIES: u32 = 2;

fn settings(prefix: &str) -> QueueSettings {
    let mut kinds = std::collections::BTreeMap::new();
    kinds.insert(
        KIND,
        KindSettings {
            concurrency: 4,
            max_attempts: 5,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        },
    );
    QueueSettings {
        prefix: prefix.into(),
        lease: Duration::from_millis(1000),
        max_lease_expiries: MAX_EXPIRIES,
        shutdown_timeout: Duration::from_secs(2),
        kinds,
        worker_kinds: vec![KIND],
        dedupe_ttl: Duration::from_secs(600),
        keep_done: 1000,
        keep_done_for: Duration::from_secs(3600),
        dead_letter_ttl: Duration::from_secs(86_400),
        shards: 1,
        redis_cluster: false,
        redis_tls: Default::default(),
    }
}

#[allow(clippy::disallowed_methods)]
fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

async fn handle(job: Job<serde_json::Value>) -> Result<(), JobError> {
    if job.payload["crash"] == true {
        // What a segfault in a native library, or the OOM killer, does to a worker.
        std::process::abort();
    }
    let i = job.payload["i"].as_u64().unwrap_or_default();
    let mut conn = redis::Client::open(env("REDIS_URL"))
        .and_then(|c| c.get_connection())
        .map_err(|e| JobError::transient("redis", e))?;
    let _: i64 = redis::cmd("INCR")
        .arg(runs_key(&env("WORKER_PREFIX"), i))
        .query(&mut conn)
        .map_err(|e| JobError::transient("redis", e))?;
    let sleep = job.payload["sleep_ms"].as_u64().unwrap_or(20);
    tokio::time::sleep(Duration::from_millis(sleep)).await;
    Ok(())
}

/// Counts the runs of job `i` (test bookkeeping, beside the queue's keys).
fn runs_key(prefix: &str, i: u64) -> String {
    format!("{prefix}:test_runs:{i}")
}

/// The worker process (run by the tests below, with their environment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process for the tests of this module; runs only when started by them"]
async fn worker_process() {
    if env("WORKER_PREFIX").is_empty() {
        return;
    }
    // Exit once the test that started this process is gone: its end of our stdin closes (also
    // when a wrapper such as faketime stands between us and it).
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        while matches!(std::io::Read::read(&mut std::io::stdin(), &mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let signer = Signer::new(Keyring::parse(&Secret::new(env("WORKER_KEYS"))).unwrap());
    let queue = Queue::connect(
        &Secret::new(env("REDIS_URL")),
        settings(&env("WORKER_PREFIX")),
        signer,
    )
    .await
    .unwrap();
    queue.publish_policy(KIND).await.unwrap();
    let runner = KindRunner::new(
        queue.clone(),
        KIND,
        &upkeep::new_worker_id(),
        4,
        Arc::new(NoObserver),
    );
    tokio::spawn(Upkeep::new(vec![runner.clone()]).run(std::future::pending()));
    Monitor::new()
        .register(move |_| {
            WorkerBuilder::new("poison")
                .backend(runner.backend())
                .concurrency(4)
                .build(handle)
        })
        .run()
        .await
        .unwrap();
}

/// Starts a worker process; `skew` (e.g. `+2s`) runs it under libfaketime with its clock that
/// far off.
fn start_worker(prefix: &str, keys: &str, skew: Option<&str>) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match skew {
        Some(offset) => {
            let mut c = Command::new("faketime");
            c.args(["-f", offset]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args([
        "--exact",
        "worker_faults::worker_process",
        "--ignored",
        "--nocapture",
    ])
    .env("WORKER_PREFIX", prefix)
    .env("WORKER_KEYS", keys)
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start the worker process (faketime is installed by scripts/test)")
}

fn job(i: usize, crash: bool) -> NewJob {
    job_with(i, serde_json::json!({"i": i, "crash": crash}))
}

fn job_with(i: usize, payload: serde_json::Value) -> NewJob {
    NewJob::now(
        Envelope::new(uuid::Uuid::nil(), "test", KIND, payload)
            .message_id(format!("m-{i}"))
            .correlation_id(format!("c-{i}")),
    )
}

/// A fresh key space, its signing keys (as the worker processes get them) and a queue on it.
async fn fresh_queue() -> (String, String, Queue) {
    let prefix = queue_prefix();
    let keyring = Keyring::random("test");
    let keys = keyring.to_spec().expose().to_owned();
    let queue = Queue::connect(
        &Secret::new(env("REDIS_URL")),
        settings(&prefix),
        Signer::new(keyring),
    )
    .await
    .unwrap();
    (prefix, keys, queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_its_worker_every_time_is_dead_lettered_as_poisoned_and_the_rest_run() {
    let (prefix, keys, queue) = fresh_queue().await;
    // 40 ordinary jobs with the poisoned one among them.
    let n = 40;
    let mut jobs: Vec<NewJob> = (0..n).map(|i| job(i, false)).collect();
    jobs.insert(5, job(999, true));
    let ids = queue.enqueue(jobs).await.unwrap();
    let poison_id = ids[5].job_id;

    // A supervisor: the worker is started again each time it dies, as systemd would.
    let mut crashes = 0;
    let mut child = start_worker(&prefix, &keys, None);
    let counts = wait_for("every job settled", Duration::from_secs(90), || {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!status.success(), "the worker exited cleanly: {status:?}");
            crashes += 1;
            child = start_worker(&prefix, &keys, None);
        }
        let q = queue.clone();
        async move {
            let c = q.counts(KIND).await.ok()?;
            (c.done + c.dead == n as u64 + 1).then_some(c)
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();

    let dead = queue.dead_letters(KIND, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].job_id, poison_id);
    assert_eq!(dead[0].reason, "poisoned");
    assert_eq!(counts.done, n as u64, "{counts:?}");
    assert_eq!(crashes, MAX_EXPIRIES + 1, "worker crashes");
    // Jobs whose lease expired with a crashed worker ran again and completed: nothing of them
    // (their lease-expiry counts included) is left in the jobs hash.
    let mut conn = crate::redis_conn().await;
    let left: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{{{prefix}:{KIND}}}:jobs"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "left in the jobs hash: {left:?}");
    println!(
        "poisoned job: {} enqueued, {} completed, 1 dead-lettered as poisoned after {crashes} \
         worker crashes, 0 other jobs dead, {} recovered leases",
        n + 1,
        counts.done,
        counts.recovered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_clocks_2_s_ahead_and_2_s_behind_never_run_a_job_twice() {
    let (prefix, keys, queue) = fresh_queue().await;
    // Each job outlives a lease (1 s) by half: it stays leased only through renewals, and a
    // reaper judging leases by its own clock would hand it to the other worker.
    let n = 24;
    queue
        .enqueue(
            (0..n)
                .map(|i| job_with(i, serde_json::json!({"i": i, "sleep_ms": 1500})))
                .collect(),
        )
        .await
        .unwrap();
    let mut ahead = start_worker(&prefix, &keys, Some("+2s"));
    let mut behind = start_worker(&prefix, &keys, Some("-2s"));
    let counts = wait_for("every job completed", Duration::from_secs(60), || {
        let q = queue.clone();
        async move {
            let c = q.counts(KIND).await.ok()?;
            (c.done == n as u64).then_some(c)
        }
    })
    .await;
    for c in [&mut ahead, &mut behind] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut conn = crate::redis_conn().await;
    let mut runs = Vec::new();
    for i in 0..n as u64 {
        let r: Option<u64> = redis::cmd("GET")
            .arg(runs_key(&prefix, i))
            .query_async(&mut conn)
            .await
            .unwrap();
        runs.push(r.unwrap_or(0));
    }
    assert!(runs.iter().all(|r| *r == 1), "runs per job: {runs:?}");
    assert_eq!((counts.recovered, counts.dead), (0, 0), "{counts:?}");
    println!(
        "clock skew ±2 s: {n} enqueued, {} completed, {} runs in all (0 duplicated), 0 \
         recovered leases, 0 lost, 0 dead",
        counts.done,
        runs.iter().sum::<u64>()
    );
}
