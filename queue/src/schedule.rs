//! The Redis side of recurring tasks: one leader among all worker processes, and each firing
//! claimed once.
//!
//! Every worker runs the scheduler loop (`worker/src/scheduler.rs`); only the holder of the
//! leader lease fires tasks, and a firing is claimed in the same script that checks the lease,
//! so a leader that lost its lease (paused, partitioned) cannot fire, and a new leader never
//! fires what the old one already did. Times come from Redis `TIME`, so worker clocks do not
//! matter. Keys share the hash tag `{<prefix>:cron}`.

use super::{Queue, QueueError};

/// One claimed firing, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Firing {
    /// Task name.
    pub name: String,
    /// The firing time it was claimed for (ms since the epoch).
    pub at_ms: i64,
    /// The worker that claimed it.
    pub worker: String,
}

struct CronKeys {
    leader: String,
    fired: String,
    log: String,
}

impl Queue {
    fn cron_keys(&self) -> CronKeys {
        let tag = format!("{{{}:cron}}", self.settings().prefix);
        CronKeys {
            leader: format!("{tag}:leader"),
            fired: format!("{tag}:fired"),
            log: format!("{tag}:log"),
        }
    }

    /// Takes or keeps the leader lease for `lease`. `Some(now)` (the Redis clock, ms) when
    /// `worker` leads.
    pub async fn lead_scheduler(
        &self,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<Option<i64>, QueueError> {
        let now: i64 = self
            .scripts()
            .lead
            .key(self.cron_keys().leader)
            .arg(worker)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok((now > 0).then_some(now))
    }

    /// Gives the lease up if `worker` holds it (graceful stop: another worker leads at once).
    pub async fn resign_scheduler(&self, worker: &str) -> Result<(), QueueError> {
        let k = self.cron_keys();
        let cur: Option<String> = redis::cmd("GET")
            .arg(&k.leader)
            .query_async(&mut self.conn())
            .await?;
        if cur.as_deref() == Some(worker) {
            // A lease taken over between the GET and the DEL would be dropped, and retaken by
            // its holder within a second; the firing claim keeps that harmless.
            let _: i64 = redis::cmd("DEL")
                .arg(&k.leader)
                .query_async(&mut self.conn())
                .await?;
        }
        Ok(())
    }

    /// The last firing time claimed for `name` (ms), if any.
    pub async fn last_firing(&self, name: &str) -> Result<Option<i64>, QueueError> {
        Ok(redis::cmd("HGET")
            .arg(self.cron_keys().fired)
            .arg(name)
            .query_async(&mut self.conn())
            .await?)
    }

    /// Claims the firing of `name` at `at_ms` for `worker`: `true` once, for the leader only.
    pub async fn claim_firing(
        &self,
        worker: &str,
        name: &str,
        at_ms: i64,
    ) -> Result<bool, QueueError> {
        let k = self.cron_keys();
        let claimed: i64 = self
            .scripts()
            .fire
            .key(&k.leader)
            .key(&k.fired)
            .key(&k.log)
            .arg(worker)
            .arg(name)
            .arg(at_ms)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(claimed == 1)
    }

    /// The most recent claimed firings, newest first (at most 200 are kept).
    pub async fn firings(&self, limit: usize) -> Result<Vec<Firing>, QueueError> {
        let lines: Vec<String> = redis::cmd("LRANGE")
            .arg(self.cron_keys().log)
            .arg(0)
            .arg(limit.saturating_sub(1))
            .query_async(&mut self.conn())
            .await?;
        Ok(lines
            .iter()
            .filter_map(|l| {
                let mut p = l.splitn(3, ' ');
                Some(Firing {
                    name: p.next()?.to_owned(),
                    at_ms: p.next()?.parse().ok()?,
                    worker: p.next()?.to_owned(),
                })
            })
            .collect())
    }
}
