//! The worker side of a job's life in Redis: fetch (lease a batch), settle (done, retry,
//! snooze, dead letter, release; one script call for a batch), hand back at shutdown, and
//! the wake-ups between shards. The backend ([`crate::backend`]) drives these.

use std::time::Duration;

use leadq_platform::metrics as m;

use crate::settle::owner;
use crate::{value_i64, value_str, Queue, QueueError, Settled, FETCH_MAX, PROMOTE_SLICE};

/// How a leased job is to be settled.
#[derive(Debug, Clone)]
pub(crate) enum Settle {
    Ok,
    Retry { code: String },
    Dead { reason: String, code: String },
    Snooze { delay: Duration, code: String },
    Release,
}

/// One job as the fetch script leased it.
#[derive(Debug)]
pub(crate) struct Leased {
    pub(crate) id: String,
    pub(crate) shard: u16,
    pub(crate) data: String,
    pub(crate) attempt: u32,
    /// The lease's owner token (see [`owner`]): what settles, renews and hands back the lease.
    pub(crate) owner: String,
    /// The job's due mark, when it was not due since its enqueue.
    pub(crate) due: Option<DueMark>,
}

/// A task's lease owner token, carried in its apalis context from the fetch to its settle:
/// the run settles the lease it was given, never a later lease of the same job.
#[derive(Debug, Clone)]
pub(crate) struct LeaseOwner(pub(crate) String);

impl LeaseOwner {
    /// The owner token of `task`'s lease (empty for a task no fetch made: `lua/ack.lua` settles
    /// nothing with an empty owner).
    pub(crate) fn of<A>(task: &apalis_core::task::Task<A>) -> String {
        task.ctx()
            .data()
            .get::<LeaseOwner>()
            .map(|o| o.0.clone())
            .unwrap_or_default()
    }
}

/// When a job was last due, if not since its enqueue (its `<id>:d`, `<due ms>[/<since ms>]`),
/// carried in a task's apalis context to the layer that measures its wait and turnaround.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DueMark {
    /// When its wait starts: its `run_at`, the end of a rate-limit snooze, or a re-drive.
    pub(crate) due: chrono::DateTime<chrono::Utc>,
    /// When its turnaround starts, if not at its enqueue: its `run_at` or a re-drive (a
    /// snooze is part of the turnaround).
    pub(crate) since: Option<chrono::DateTime<chrono::Utc>>,
}

impl DueMark {
    /// Reads a stored mark; `None` for an empty or unreadable one.
    pub(crate) fn parse(mark: &str) -> Option<Self> {
        let ms = |s: &str| {
            s.parse::<i64>()
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
        };
        let (due, since) = match mark.split_once('/') {
            Some((due, since)) => (ms(due)?, Some(ms(since)?)),
            None => (ms(mark)?, None),
        };
        Some(Self { due, since })
    }
}

/// What one fetch leased, and whether to wait before the next.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub(crate) jobs: Vec<Leased>,
    /// The fetch took the last ready job of its shard (or found none): the next fetch should
    /// wait for a wake-up (or `due_in`) first, not find the shard empty in one more round trip.
    pub(crate) drained: bool,
    /// How long until the earliest scheduled job is due (`None`: nothing scheduled, or not
    /// looked up: a fetch that returns jobs and is not drained does not need it).
    pub(crate) due_in: Option<Duration>,
}

impl Queue {
    /// Writes the retry policy of `kind` to Redis, where the ack script reads it.
    pub async fn publish_policy(&self, kind: &str) -> Result<(), QueueError> {
        let s = self.kind_settings(kind);
        for shard in self.shards() {
            let _: () = redis::cmd("HSET")
                .arg(&self.keys(kind, shard).policy)
                .arg("max_attempts")
                .arg(s.max_attempts)
                .arg("backoff_base_ms")
                .arg(s.backoff_base.as_millis() as u64)
                .arg("backoff_max_ms")
                .arg(s.backoff_max.as_millis() as u64)
                .query_async(&mut self.conn())
                .await?;
        }
        Ok(())
    }

    /// Leases up to `n` jobs of `kind` for `worker` from `shard`, and never more than
    /// [`FETCH_MAX`] in one call. `fetch_no` numbers the call within the worker process: it is
    /// part of each lease's owner, so a fetch whose reply is lost can be handed back by it
    /// ([`Queue::release_fetch`]).
    pub(crate) async fn fetch(
        &self,
        kind: &str,
        shard: u16,
        worker: &str,
        fetch_no: u64,
        n: usize,
    ) -> Result<Fetched, QueueError> {
        let k = self.keys(kind, shard);
        // Workers wait on shard 0's wake list (see `wait_for_work`): only a queue of one shard
        // may have its wake-ups cleared by a fetch that drained it.
        let own_wake_list = self.shards().len() == 1;
        let reply: Vec<redis::Value> = self
            .inner
            .scripts
            .fetch
            .key(&k.ready)
            .key(&k.jobs)
            .key(&k.leases)
            .key(&k.scheduled)
            .key(&k.fair)
            .key(&k.index)
            .key(&k.parked)
            .key(k.suspect(worker))
            .key(&k.wake)
            .arg(n.min(FETCH_MAX))
            .arg(self.inner.cfg.lease.as_millis() as u64)
            .arg(worker)
            .arg(PROMOTE_SLICE)
            .arg(u8::from(own_wake_list))
            .arg(fetch_no)
            .invoke_async(&mut self.conn())
            .await?;
        let (now, next_due, drained) = match reply.get(..3) {
            Some([now, next, drained]) => (value_i64(now)?, value_i64(next)?, value_i64(drained)?),
            _ => return Err(QueueError::Protocol("fetch reply shape".into())),
        };
        let due_in = (next_due >= 0).then(|| Duration::from_millis((next_due - now).max(0) as u64));
        let mut out = Vec::with_capacity(reply.len() / 4);
        for job in reply.get(3..).unwrap_or_default().chunks(4) {
            let [id, data, attempt, due] = job else {
                return Err(QueueError::Protocol("fetch reply shape".into()));
            };
            let attempt = u32::try_from(value_i64(attempt)?).unwrap_or(u32::MAX);
            let due = value_str(due)?;
            out.push(Leased {
                id: value_str(id)?,
                shard,
                data: value_str(data)?,
                attempt,
                owner: owner(worker, attempt, fetch_no),
                due: DueMark::parse(&due),
            });
        }
        Ok(Fetched {
            jobs: out,
            drained: drained == 1,
            due_in,
        })
    }

    /// Hands back every job of `kind` leased by `worker` (see `lua/release_owned.lua`).
    pub(crate) async fn release_owned(&self, kind: &str, worker: &str) -> Result<u64, QueueError> {
        let mut released = 0;
        for shard in self.shards() {
            released += self.release_leases(kind, shard, worker, None).await?;
        }
        if released > 0 {
            self.wake(kind).await?;
        }
        Ok(released)
    }

    /// Hands back the jobs of `kind` that `worker`'s fetch number `fetch_no` leased from
    /// `shard`, whose reply the worker never read (see `lua/release_owned.lua`).
    pub(crate) async fn release_fetch(
        &self,
        kind: &str,
        shard: u16,
        worker: &str,
        fetch_no: u64,
    ) -> Result<u64, QueueError> {
        let released = self
            .release_leases(kind, shard, worker, Some(fetch_no))
            .await?;
        if released > 0 {
            self.wake(kind).await?;
        }
        Ok(released)
    }

    async fn release_leases(
        &self,
        kind: &str,
        shard: u16,
        worker: &str,
        fetch_no: Option<u64>,
    ) -> Result<u64, QueueError> {
        let k = self.keys(kind, shard);
        Ok(self
            .inner
            .scripts
            .release_owned
            .key(&k.jobs)
            .key(&k.leases)
            .key(&k.ready)
            .key(&k.wake)
            .key(&k.fair)
            .key(&k.index)
            .key(&k.parked)
            .arg(worker)
            .arg(100_000)
            .arg(fetch_no.map(|n| n.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// Settles leased jobs of `kind` in one script call. `entries` are (job id, owner, how).
    pub(crate) async fn settle(
        &self,
        kind: &str,
        shard: u16,
        entries: &[(String, String, Settle)],
    ) -> Result<Vec<Settled>, QueueError> {
        let k = self.keys(kind, shard);
        let s = self.kind_settings(kind);
        let mut inv = self.inner.scripts.ack.prepare_invoke();
        for key in [
            &k.jobs,
            &k.leases,
            &k.scheduled,
            &k.dead,
            &k.dead_data,
            &k.done,
            &k.stats,
            &k.policy,
            &k.ready,
            &k.wake,
            &k.fair,
            &k.index,
            &k.parked,
        ] {
            inv.key(key);
        }
        inv.arg(entries.len())
            .arg(s.max_attempts)
            .arg(s.backoff_base.as_millis() as u64)
            .arg(s.backoff_max.as_millis() as u64);
        for (id, owner, how) in entries {
            inv.arg(id).arg(owner);
            match how {
                Settle::Ok => inv.arg("ok").arg("").arg(""),
                Settle::Retry { code } => inv.arg("retry").arg(code).arg(rand::random::<f64>()),
                Settle::Dead { reason, code } => inv.arg("dead").arg(reason).arg(code),
                Settle::Snooze { delay, code } => {
                    inv.arg("snooze").arg(delay.as_millis() as u64).arg(code)
                }
                Settle::Release => inv.arg("release").arg("").arg(""),
            };
        }
        let mut reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        if reply.len() > entries.len() && reply.last().is_some_and(|w| w == "woke") {
            reply.pop();
            self.forward_wake(kind, shard).await;
        }
        reply.iter().map(|r| settled(r)).collect()
    }

    /// Passes a wake-up a script pushed on `shard`'s own list on to shard 0's, where idle
    /// workers wait (see [`Queue::wake`]). The script's work is done by then: a failure here
    /// is logged, not returned (the workers look again within half a second anyway).
    pub(crate) async fn forward_wake(&self, kind: &str, shard: u16) {
        if shard != 0 {
            if let Err(error) = self.wake(kind).await {
                metrics::counter!(m::QUEUE_REDIS_ERRORS_TOTAL, m::label::OP => "wake").increment(1);
                tracing::warn!(kind, shard, error = %error,
                    "Could not wake idle workers; they look again within half a second.");
            }
        }
    }
}

/// One entry of the ack script's reply: `<result>` or `<result>:<detail>` (see `lua/ack.lua`).
fn settled(entry: &str) -> Result<Settled, QueueError> {
    let (result, detail) = entry.split_once(':').unwrap_or((entry, ""));
    let ms = || {
        detail
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| QueueError::Protocol(format!("ack result {entry}")))
    };
    match result {
        "completed" => Ok(Settled::Completed),
        "retried" => Ok(Settled::Retried { delay: ms()? }),
        "dead" => Ok(Settled::Dead {
            reason: detail.to_owned(),
        }),
        "snoozed" => Ok(Settled::Snoozed { delay: ms()? }),
        "released" => Ok(Settled::Released),
        "lost" => Ok(Settled::Lost),
        _ => Err(QueueError::Protocol(format!("ack result {entry}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_replies_are_read_back_into_what_happened() {
        assert!(matches!(settled("completed"), Ok(Settled::Completed)));
        assert!(matches!(settled("lost"), Ok(Settled::Lost)));
        assert!(matches!(settled("released"), Ok(Settled::Released)));
        assert!(matches!(
            settled("retried:1500"),
            Ok(Settled::Retried { delay }) if delay == Duration::from_millis(1500)
        ));
        assert!(matches!(
            settled("snoozed:60000"),
            Ok(Settled::Snoozed { delay }) if delay == Duration::from_secs(60)
        ));
        // A reason keeps everything after the first colon.
        assert!(matches!(
            settled("dead:malformed_payload"),
            Ok(Settled::Dead { reason }) if reason == "malformed_payload"
        ));
        for bad in ["", "retried", "retried:soon", "finished", "completed!"] {
            assert!(
                matches!(settled(bad), Err(QueueError::Protocol(_))),
                "{bad:?} is not an ack result"
            );
        }
    }

    #[test]
    fn a_due_mark_reads_its_due_time_and_turnaround_start() {
        let at = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap();
        assert_eq!(
            DueMark::parse("1765000000123"),
            Some(DueMark {
                due: at(1_765_000_000_123),
                since: None
            })
        );
        assert_eq!(
            DueMark::parse("1765000000123/1765000000000"),
            Some(DueMark {
                due: at(1_765_000_000_123),
                since: Some(at(1_765_000_000_000))
            })
        );
        for bad in ["", "x", "1/", "/1", "1/x", "99999999999999999999"] {
            assert_eq!(DueMark::parse(bad), None, "{bad:?}");
        }
    }
}
