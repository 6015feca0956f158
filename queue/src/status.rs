//! What operators read: per-kind counts, completions per minute, the live workers, the latest
//! dead letters.

use std::collections::BTreeMap;

use crate::{
    dlq, ms_to_time, value_i64, DeadLetter, KindCounts, Queue, QueueError, Throughput, WorkerInfo,
    WorkerStatus,
};

/// How far back [`Queue::completions`] reaches at most, in minutes (a day: the default
/// retention of `done`, `LEADQ_KEEP_DONE_SECS`).
pub const COMPLETIONS_MAX_MINUTES: u32 = 1440;

impl Queue {
    /// Counts of one kind, summed over its shards (one round trip per shard).
    pub async fn counts(&self, kind: &str) -> Result<KindCounts, QueueError> {
        let mut c = KindCounts {
            kind: kind.to_owned(),
            ..KindCounts::default()
        };
        for shard in self.shards() {
            let k = self.keys(kind, shard);
            type Reply = (u64, u64, u64, u64, u64, BTreeMap<String, u64>);
            let (pending, held, scheduled, running, dead, stats): Reply = redis::pipe()
                .zcard(&k.ready)
                .zcard(&k.parked)
                .zcard(&k.scheduled)
                .zcard(&k.leases)
                .zcard(&k.dead)
                .hgetall(&k.stats)
                .query_async(&mut self.conn())
                .await?;
            let stat = |name: &str| stats.get(name).copied().unwrap_or(0);
            c.pending += pending;
            c.held += held;
            c.scheduled += scheduled;
            c.running += running;
            c.dead += dead;
            c.done += stat("completed");
            c.failed += stat("failed");
            c.retries += stat("retried");
            c.rate_limited += stat("rate_limited");
            c.recovered += stat("recovered");
        }
        Ok(c)
    }

    /// Jobs of `kind` completed per minute over the last `minutes` (1 to
    /// [`COMPLETIONS_MAX_MINUTES`]), summed over its shards, counted from the `done` set
    /// (completion times, Redis clock). One round trip for Redis `TIME` ("now"), then one
    /// pipeline per shard (a `ZCOUNT` per minute).
    ///
    /// Bucketing: 60-second windows ending at now, not calendar minutes. Entry `b` (0 = the
    /// oldest) counts completion times `t` with `now - (minutes - b) * 60 s < t` and
    /// `t <= now - (minutes - b - 1) * 60 s`; the last entry is the last 60 s (and also counts
    /// any completion stamped after now, by a Cluster node whose clock runs ahead).
    ///
    /// `covered` is false when completions inside the window may have been trimmed from `done`
    /// (the reaper keeps `LEADQ_KEEP_DONE` ids per shard, for `LEADQ_KEEP_DONE_SECS`), so the
    /// counts are a lower bound. For a shard that is: the lifetime `completed` counter exceeds
    /// the ids kept, the oldest kept id (if any) completed after the window start, and a trim
    /// could have reached into the window: the shard keeps the full count (trimmed by count),
    /// or the age limit is shorter than the window. The retention settings are this process's,
    /// which the workers share in a normal deployment.
    pub async fn completions(&self, kind: &str, minutes: u32) -> Result<Throughput, QueueError> {
        if !(1..=COMPLETIONS_MAX_MINUTES).contains(&minutes) {
            return Err(QueueError::Invalid(format!(
                "minutes must be 1-{COMPLETIONS_MAX_MINUTES}"
            )));
        }
        const MINUTE: i64 = 60_000;
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut self.conn()).await?;
        let now = secs * 1000 + micros / 1000;
        let n = i64::from(minutes);
        let start = now - n * MINUTE;
        let cfg = self.settings();
        let age_cuts_window = (cfg.keep_done_for.as_millis() as i64) < n * MINUTE;
        let mut per_minute = vec![0u64; minutes as usize];
        let mut covered = true;
        for shard in self.shards() {
            let k = self.keys(kind, shard);
            let mut pipe = redis::pipe();
            for b in 0..n {
                let lo = start + b * MINUTE;
                let hi = if b == n - 1 {
                    "+inf".to_owned()
                } else {
                    (lo + MINUTE).to_string()
                };
                pipe.zcount(&k.done, format!("({lo}"), hi);
            }
            pipe.zcard(&k.done)
                .zrange_withscores(&k.done, 0, 0)
                .hget(&k.stats, "completed");
            let replies: Vec<redis::Value> = pipe.query_async(&mut self.conn()).await?;
            let (counts, tail) = replies.split_at(replies.len().saturating_sub(3));
            let [kept, oldest, completed] = tail else {
                return Err(QueueError::Protocol("completions reply shape".into()));
            };
            for (slot, c) in per_minute.iter_mut().zip(counts) {
                *slot += value_i64(c)?.max(0) as u64;
            }
            let kept = value_i64(kept)?;
            let oldest: Vec<(String, f64)> = redis::from_redis_value_ref(oldest)
                .map_err(|e| QueueError::Protocol(e.to_string()))?;
            let completed: Option<i64> = redis::from_redis_value_ref(completed)
                .map_err(|e| QueueError::Protocol(e.to_string()))?;
            let oldest_after_start = oldest.first().is_none_or(|(_, at)| *at as i64 > start);
            let trimmed = completed.unwrap_or(0) > kept;
            let count_trim = kept as u64 >= cfg.keep_done;
            if trimmed && oldest_after_start && (count_trim || age_cuts_window) {
                covered = false;
            }
        }
        Ok(Throughput {
            per_minute,
            covered,
        })
    }

    /// The live workers of the given kinds, merged per worker.
    pub async fn workers(&self, kinds: &[&str]) -> Result<Vec<WorkerStatus>, QueueError> {
        let mut conn = self.conn();
        let mut merged: BTreeMap<String, WorkerStatus> = BTreeMap::new();
        for kind in kinds {
            // The worker registry of a kind lives in its shard 0.
            let k = self.keys(kind, 0);
            let (beats, infos): (Vec<(String, i64)>, BTreeMap<String, String>) = redis::pipe()
                .zrange_withscores(&k.workers, 0, -1)
                .hgetall(&k.worker_info)
                .query_async(&mut conn)
                .await?;
            for (id, beat) in beats {
                let Some(info) = infos
                    .get(&id)
                    .and_then(|j| serde_json::from_str::<WorkerInfo>(j).ok())
                else {
                    continue;
                };
                let last = ms_to_time(beat);
                let entry = merged.entry(id.clone()).or_insert_with(|| WorkerStatus {
                    id,
                    host: info.host.clone(),
                    pid: info.pid,
                    kinds: info.kinds.clone(),
                    started_at: info.started_at,
                    last_heartbeat: last,
                    in_flight: 0,
                });
                entry.in_flight += info.in_flight;
                entry.last_heartbeat = entry.last_heartbeat.max(last);
            }
        }
        Ok(merged.into_values().collect())
    }

    /// The most recent dead letters of `kind`, newest first.
    pub async fn dead_letters(
        &self,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self
            .dead_letter_page(kind, &dlq::Filter::default(), None, limit)
            .await?
            .items)
    }
}
