//! What operators read: per-kind counts, the live workers, the latest dead letters.

use std::collections::BTreeMap;

use crate::{dlq, ms_to_time, DeadLetter, KindCounts, Queue, QueueError, WorkerInfo, WorkerStatus};

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
