//! Where a job is now, as the queue knows it: still queued, completed, dead-lettered, or
//! no longer known.
//!
//! Records kept outside Redis (`job_runs` in PostgreSQL) are written after the fact and can
//! miss their last write: a worker killed between a job's acknowledgement and its record, or
//! PostgreSQL down at that moment. Redis is the record of what happened; this is how the
//! reconciliation asks it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ms_to_time, DeadLetter, Queue, QueueError};

/// What the queue knows about one job.
#[derive(Debug, Clone)]
pub enum Whereabouts {
    /// Its data is still in the queue: waiting, running, or scheduled for a retry.
    Queued,
    /// Completed at this time (while its completion is retained).
    Completed(DateTime<Utc>),
    /// Dead-lettered: the record the dead-letter operations read.
    Dead(Box<DeadLetter>),
    /// None of these: its completion record was trimmed (`LEADQ_KEEP_DONE*`), its dead letter
    /// purged, or the job was lost.
    Unknown,
}

impl Queue {
    /// Where each of `ids` (jobs of `kind` of `tenant`) is now, in order; one round trip per
    /// shard, and one more for a shard holding some of them as dead letters. Every shard is
    /// asked: a job stays in the shard it was enqueued in, and the tenant's shard changes when
    /// `LEADQ_QUEUE_SHARDS` does.
    pub async fn whereabouts(
        &self,
        kind: &str,
        tenant: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<Whereabouts>, QueueError> {
        let mut found = vec![Whereabouts::Unknown; ids.len()];
        if ids.is_empty() {
            return Ok(found);
        }
        // The tenant's current shard first: usually the only one that knows its jobs.
        let home = self.shard_of(&tenant);
        let shards = std::iter::once(home).chain(self.shards().filter(|s| *s != home));
        for shard in shards {
            let k = self.keys(kind, shard);
            let mut pipe = redis::pipe();
            for id in ids {
                let id = id.to_string();
                pipe.hexists(&k.jobs, &id)
                    .zscore(&k.done, &id)
                    .zscore(&k.dead, &id);
            }
            let replies: Vec<(bool, Option<f64>, Option<f64>)> =
                pipe.query_async(&mut self.conn()).await?;
            // Dead letters found here: their positions, and (id, time) for `dead_by_ids`.
            let (mut dead, mut entries) = (Vec::new(), Vec::new());
            for (i, (queued, done, dead_at)) in replies.into_iter().enumerate() {
                let slot = &mut found[i];
                match (queued, done, dead_at) {
                    // A job still queued anywhere is queued.
                    (true, _, _) => *slot = Whereabouts::Queued,
                    // Else the first record found wins.
                    (_, Some(at), _) if matches!(slot, Whereabouts::Unknown) => {
                        *slot = Whereabouts::Completed(ms_to_time(at as i64));
                    }
                    (_, None, Some(at)) if matches!(slot, Whereabouts::Unknown) => {
                        dead.push(i);
                        entries.push((ids[i].to_string(), at as i64));
                    }
                    _ => {}
                }
            }
            if dead.is_empty() {
                continue;
            }
            let letters = self.dead_by_ids(kind, shard, &entries).await?;
            for (i, letter) in dead.into_iter().zip(letters) {
                found[i] = Whereabouts::Dead(Box::new(letter));
            }
        }
        Ok(found)
    }
}
