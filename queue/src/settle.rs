//! Settling finished jobs in Redis: the group-commit [`Settler`], and the retrying call it and
//! the backend share.
//!
//! Every finished job of a kind in this process hands its settle entry to the kind's settler,
//! which sends whatever has gathered while its previous call was in flight as one script
//! call. A lone job is settled at once (no timer, no added latency); under load, jobs
//! finishing together share a round trip and the script's fixed cost, which is what bounds a
//! queue's jobs/s and Redis commands per job. Redis errors are retried for up to one lease;
//! past that the lease has expired and another worker runs the job again (at-least-once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::BoxFuture;
use futures::FutureExt;
use leadq_platform::metrics as m;

use crate::{Queue, QueueError, Settle, Settled};

/// One acknowledgement: (job id, lease owner token, how to settle it).
pub(crate) type Entry = (String, String, Settle);

/// The lease owner token of `worker`'s run of a job at `attempt`, leased by the worker's fetch
/// number `fetch_no` (as `lua/fetch.lua` writes it). Unique per lease: a run that outlived its
/// lease cannot settle the job another worker has taken over since, and a retried settle of one
/// run cannot settle the next run of the same job by the same worker at the same attempt (a
/// snooze gives its attempt back).
pub(crate) fn owner(worker: &str, attempt: u32, fetch_no: u64) -> String {
    format!("{worker}:{attempt}#{fetch_no}")
}

/// Backoff between retries of a Redis call: 50 ms doubling to 5 s, jittered, unbounded.
pub(crate) fn redis_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Counts and logs a failed Redis call of the worker side (it is retried).
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
                    // `code`: a dependency down, so the error alert is critical.
                    tracing::error!(kind, error = %error, code = "redis_unavailable",
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

/// Settles one shard's entries, in order; `None`: it could not be done.
pub(crate) type SettleFn =
    Arc<dyn Fn(u16, Vec<Entry>) -> BoxFuture<'static, Option<Vec<Settled>>> + Send + Sync>;

/// The settle call of `kind` against Redis, retried for up to one lease (past it, the leases
/// are gone and the jobs will run again anyway).
pub(crate) fn redis_settle(queue: Queue, kind: &'static str) -> SettleFn {
    Arc::new(move |shard, entries| {
        let queue = queue.clone();
        async move {
            let lease = queue.settings().lease;
            settle_with_retry(&queue, kind, shard, &entries, lease).await
        }
        .boxed()
    })
}

type SettleRequest = (u16, Entry, tokio::sync::oneshot::Sender<Option<Settled>>);

/// Group commit for acknowledgements (see the module docs).
#[derive(Debug)]
pub(crate) struct Settler {
    tx: tokio::sync::mpsc::UnboundedSender<SettleRequest>,
}

impl Settler {
    /// Starts the settler's loops; they end when the settler is dropped.
    pub(crate) fn start(settle: SettleFn) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<SettleRequest>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        // Two loops: while one batch is on its way to Redis, the next one gathers and goes,
        // so a job finishing just after a batch left does not wait for that batch's round trip.
        for _ in 0..SETTLE_LOOPS {
            let (settle, rx) = (settle.clone(), rx.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(SETTLE_BATCH);
                loop {
                    // Ends when every sender is gone: the kind's runner was dropped.
                    if rx.lock().await.recv_many(&mut batch, SETTLE_BATCH).await == 0 {
                        return;
                    }
                    settle_batch(&settle, &mut batch).await;
                }
            });
        }
        Self { tx }
    }

    /// Settles one entry of `shard` with whatever else has gathered; `None`: it could not be
    /// settled (the lease will expire and the job runs again).
    pub(crate) async fn settle(&self, shard: u16, entry: Entry) -> Option<Settled> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx.send((shard, entry, reply)).ok()?;
        answer.await.ok().flatten()
    }
}

/// Settles a gathered batch: one call per shard among its entries, each entry's answer to its
/// own waiter.
async fn settle_batch(settle: &SettleFn, batch: &mut Vec<SettleRequest>) {
    let mut by_shard: BTreeMap<u16, (Vec<_>, Vec<_>)> = BTreeMap::new();
    for (shard, entry, reply) in batch.drain(..) {
        let group = by_shard.entry(shard).or_default();
        group.0.push(entry);
        group.1.push(reply);
    }
    for (shard, (entries, replies)) in by_shard {
        let settled = settle(shard, entries).await;
        for (i, reply) in replies.into_iter().enumerate() {
            let one = settled.as_ref().and_then(|v| v.get(i).cloned());
            // The job's future may have been dropped (worker shutting down): nothing waits
            // for the answer then, and the settle has happened.
            let _ = reply.send(one);
        }
    }
}

#[cfg(test)]
mod tests;
