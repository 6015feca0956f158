//! Replies Redis sent that the worker never read: the connection failed after Redis ran the
//! script. A lease must still be the run's own, and a lost fetch must not strand its jobs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A TCP proxy in front of the test Redis that cuts, once, the connection whose reply carries
/// `marker`, dropping that reply: Redis ran the command, the client hears only a closed
/// connection. Every other byte, and every later connection, passes through.
struct CuttingProxy {
    url: String,
    cuts: Arc<AtomicUsize>,
}

async fn cutting_proxy(marker: &'static [u8]) -> CuttingProxy {
    #[allow(clippy::disallowed_methods)]
    let url = std::env::var("REDIS_URL").expect("REDIS_URL (run through scripts/test)");
    let redis = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cuts = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(AtomicBool::new(true));
    let counted = cuts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = TcpStream::connect(&redis).await else {
                continue;
            };
            let (armed, cuts) = (armed.clone(), counted.clone());
            tokio::spawn(async move {
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut redis_rx, mut redis_tx) = upstream.into_split();
                let requests = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_rx, &mut redis_tx).await;
                });
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = redis_rx.read(&mut buf).await {
                    let chunk = &buf[..n];
                    if n == 0 {
                        break;
                    }
                    if chunk.windows(marker.len()).any(|w| w == marker)
                        && armed.swap(false, Ordering::SeqCst)
                    {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    if client_tx.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                requests.abort();
            });
        }
    });
    CuttingProxy {
        url: format!("redis://{addr}/"),
        cuts,
    }
}

/// A worker's fetch runs in Redis but its reply is lost with the connection. Its jobs are
/// leased to the worker, which does not know it: they used to wait out their lease (30 s
/// here), come back as suspects run one at a time, each with an attempt and a lease expiry
/// counted against it for a run that never happened. The worker hands a fetch it never heard
/// back before its next fetch, so the jobs run at once, at their first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_of_a_fetch_whose_reply_was_lost_run_at_once_at_their_first_attempt() {
    let prefix = queue_prefix();
    let mut s = settings(&prefix, 3, 100);
    s.lease = Duration::from_secs(30);
    let proxy = cutting_proxy(b"lost-reply-marker").await;
    #[allow(clippy::disallowed_methods)]
    let url = std::env::var("REDIS_URL").expect("REDIS_URL (run through scripts/test)");
    let signer = Signer::new(Keyring::random("test"));
    let producer = Queue::connect(&Secret::new(url), s.clone(), signer.clone())
        .await
        .unwrap();
    let worker_queue = Queue::connect(&Secret::new(proxy.url.clone()), s, signer)
        .await
        .unwrap();
    let seen = Recorder::default();
    let handler: Handler = Arc::new(|_| async { Ok(()) }.boxed());
    let w = start_registered(&worker_queue, handler, seen.clone()).await;

    let jobs: Vec<NewJob> = (0..5)
        .map(|i| {
            let mut j = job(i, None);
            j.envelope.payload = serde_json::json!({"i": i, "note": "lost-reply-marker"});
            j
        })
        .collect();
    producer.enqueue(jobs).await.unwrap();
    wait_for(
        "the five jobs to run (their fetch's reply was lost)",
        Duration::from_secs(15),
        || async {
            let done = seen.0.lock().unwrap().reports.len();
            (done == 5).then_some(())
        },
    )
    .await;
    assert_eq!(
        proxy.cuts.load(Ordering::SeqCst),
        1,
        "the fetch's reply was cut"
    );
    let starts = seen.0.lock().unwrap().starts.clone();
    let attempts: Vec<u32> = starts.iter().map(|(_, a, _)| *a).collect();
    assert_eq!(
        attempts,
        vec![1; 5],
        "each job ran once, at its first attempt"
    );
    assert!(seen
        .0
        .lock()
        .unwrap()
        .reports
        .iter()
        .all(|r| r.settled == Settled::Completed));
    w.stop().await;
}

/// A job snoozed (rate-limited: no attempt used) comes back to the same worker at the same
/// attempt. Its second lease has an owner token of its own: with one token for both, a
/// settle of the first run retried after a lost reply (the settler retries for up to a lease)
/// could snooze or finish the second run's lease while the second run was still going, and
/// its own settle would then find the lease gone and run the job once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_leased_again_by_the_same_worker_at_the_same_attempt_gets_a_lease_of_its_own() {
    let prefix = queue_prefix();
    let q = queue(settings(&prefix, 3, 100)).await;
    let jobs_key = format!("{{{prefix}:{KIND}}}:jobs");
    let owners: Arc<Mutex<Vec<(u32, String)>>> = Arc::default();
    let handler: Handler = {
        let owners = owners.clone();
        Arc::new(move |job| {
            let (owners, jobs_key) = (owners.clone(), jobs_key.clone());
            async move {
                let mut conn = crate::redis_conn().await;
                let owner: String = redis::cmd("HGET")
                    .arg(&jobs_key)
                    .arg(format!("{}:o", job.meta.job_id))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let first = {
                    let mut o = owners.lock().unwrap();
                    o.push((job.meta.attempt, owner));
                    o.len() == 1
                };
                if first {
                    Err(JobError::RateLimited {
                        code: "rate_limited",
                        retry_after: Duration::from_millis(20),
                    })
                } else {
                    Ok(())
                }
            }
            .boxed()
        })
    };
    let seen = Recorder::default();
    let w = start_registered(&q, handler, seen.clone()).await;
    q.enqueue(vec![job(0, None)]).await.unwrap();
    wait_for(
        "the snoozed job to run again",
        Duration::from_secs(10),
        || async {
            let done = seen.0.lock().unwrap().reports.len();
            (done == 2).then_some(())
        },
    )
    .await;
    let owners = owners.lock().unwrap().clone();
    assert_eq!((owners[0].0, owners[1].0), (1, 1), "the same attempt twice");
    assert_ne!(
        owners[0].1, owners[1].1,
        "two leases of one job shared an owner token"
    );
    w.stop().await;
}
