//! What every worker process does besides running jobs: heartbeats, lease renewal, and the
//! reaper that recovers jobs from dead workers and promotes due retries.
//!
//! Every worker reaps every queue it serves, so recovery needs no leader and survives the
//! loss of any worker. Leases are renewed three times per lease period; a worker that cannot
//! reach Redis for a whole lease loses its leases, and its jobs run elsewhere.

use std::time::Duration;

use chrono::{DateTime, Utc};
use leadq_platform::metrics as m;

use super::{QueueError, WorkerInfo};
use crate::backend::KindRunner;
use crate::settle::redis_error;

/// A worker disappears from the status after this long without a heartbeat.
const FORGET_WORKER_AFTER: Duration = Duration::from_secs(60);
/// How often a worker heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How often a worker reaps.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// The upkeep of one worker process.
#[derive(Debug, Clone)]
pub struct Upkeep {
    runners: Vec<KindRunner>,
    host: String,
    pid: u32,
    started_at: DateTime<Utc>,
}

/// A process-unique worker id: `<host>-<pid>-<random>`. Never reused, so a restarted worker
/// is never confused with its previous life (apalis-redis refuses reused names for a while).
pub fn new_worker_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

impl Upkeep {
    /// Upkeep for the kinds `runners` serve (all with the same worker id).
    pub fn new(runners: Vec<KindRunner>) -> Self {
        Self {
            runners,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            started_at: Utc::now(),
        }
    }

    fn info(&self, runner: &KindRunner) -> WorkerInfo {
        WorkerInfo {
            id: runner.worker_id.to_string(),
            host: self.host.clone(),
            pid: self.pid,
            kinds: self.runners.iter().map(|r| r.kind.to_owned()).collect(),
            started_at: self.started_at,
            in_flight: runner.book.len(),
        }
    }

    async fn heartbeat(&self, runner: &KindRunner, leaving: bool) -> Result<i64, QueueError> {
        let q = &runner.queue;
        // The worker registry of a kind lives in its shard 0.
        let k = q.keys(runner.kind, 0);
        let info = if leaving {
            String::new()
        } else {
            serde_json::to_string(&self.info(runner)).unwrap_or_default()
        };
        let now: i64 = q
            .scripts()
            .heartbeat
            .key(&k.workers)
            .key(&k.worker_info)
            .arg(runner.worker_id.as_ref())
            .arg(info)
            .arg(FORGET_WORKER_AFTER.as_millis() as u64)
            .invoke_async(&mut q.conn())
            .await?;
        Ok(now)
    }

    /// Heartbeats every kind once. Used at start-up, so the worker shows at once.
    pub async fn beat(&self) {
        for r in &self.runners {
            match self.heartbeat(r, false).await {
                Ok(now_ms) => {
                    metrics::gauge!(m::WORKER_HEARTBEAT_TIMESTAMP_SECONDS,
                        m::label::WORKER => r.worker_id.to_string())
                    .set(now_ms as f64 / 1000.0);
                }
                Err(error) => redis_error("heartbeat", &error),
            }
        }
    }

    async fn renew(&self) {
        for r in &self.runners {
            let mut by_shard: std::collections::BTreeMap<u16, Vec<(String, String)>> =
                std::collections::BTreeMap::new();
            for (id, owner, shard) in r.book.snapshot() {
                by_shard.entry(shard).or_default().push((id, owner));
            }
            let q = &r.queue;
            for (shard, held) in by_shard {
                let k = q.keys(r.kind, shard);
                let mut inv = q.scripts().renew.prepare_invoke();
                inv.key(&k.jobs)
                    .key(&k.leases)
                    .arg(q.settings().lease.as_millis() as u64);
                for (id, owner) in &held {
                    inv.arg(id).arg(owner);
                }
                match inv.invoke_async::<Vec<String>>(&mut q.conn()).await {
                    Ok(lost) => {
                        for id in lost {
                            metrics::counter!(m::QUEUE_LOST_LEASES_TOTAL, m::label::KIND => r.kind)
                                .increment(1);
                            tracing::warn!(kind = r.kind, job_id = %id,
                                "Lease taken over while the job runs; another worker may run it too.");
                        }
                    }
                    Err(error) => redis_error("renew", &QueueError::from(error)),
                }
            }
        }
    }

    async fn reap(&self) {
        for r in &self.runners {
            for shard in r.queue.shards() {
                self.reap_shard(r, shard).await;
            }
        }
    }

    async fn reap_shard(&self, r: &KindRunner, shard: u16) {
        {
            let q = &r.queue;
            let k = q.keys(r.kind, shard);
            let res: Result<(u64, u64, u64, u64, u8), _> = q
                .scripts()
                .reap
                .key(&k.jobs)
                .key(&k.leases)
                .key(&k.ready)
                .key(&k.dead)
                .key(&k.dead_data)
                .key(&k.stats)
                .key(&k.wake)
                .key(&k.scheduled)
                .key(&k.fair)
                .key(&k.legacy_ready)
                .key(&k.index)
                .key(&k.parked)
                .key(&k.done)
                .arg(q.settings().max_lease_expiries)
                .arg(super::REAP_SLICE)
                .arg(q.settings().dead_letter_ttl.as_millis() as u64)
                .arg(q.settings().keep_done)
                .arg(q.settings().keep_done_for.as_millis() as u64)
                .invoke_async(&mut q.conn())
                .await;
            match res {
                Ok((recovered, poisoned, _promoted, expired, woke)) => {
                    if woke == 1 {
                        q.forward_wake(r.kind, shard).await;
                    }
                    if expired > 0 {
                        tracing::info!(
                            kind = r.kind,
                            expired,
                            "Deleted dead letters past their retention."
                        );
                    }
                    if recovered > 0 {
                        tracing::warn!(
                            kind = r.kind,
                            recovered,
                            "Recovered jobs whose lease expired (a worker died or stalled)."
                        );
                    }
                    if poisoned > 0 {
                        metrics::counter!(m::JOBS_TOTAL, m::label::KIND => r.kind,
                            m::label::OUTCOME => m::outcome::DEAD)
                        .increment(poisoned);
                        tracing::error!(
                            kind = r.kind,
                            poisoned,
                            "Dead-lettered jobs as poisoned: their leases kept expiring."
                        );
                    }
                }
                Err(error) => redis_error("reap", &QueueError::from(error)),
            }
        }
    }

    /// Runs until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let lease = self
            .runners
            .first()
            .map(|r| r.queue.settings().lease)
            .unwrap_or(Duration::from_secs(15));
        let mut renew = tokio::time::interval(lease / 3);
        let mut reap = tokio::time::interval(REAP_EVERY);
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        for i in [&mut renew, &mut reap, &mut beat] {
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = renew.tick() => self.renew().await,
                _ = reap.tick() => self.reap().await,
                _ = beat.tick() => self.beat().await,
            }
        }
    }

    /// Removes this worker from the status (graceful stop).
    pub async fn leave(&self) {
        for r in &self.runners {
            if let Err(error) = self.heartbeat(r, true).await {
                redis_error("leave", &error);
            }
        }
    }
}
