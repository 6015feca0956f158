//! Where a job is now, as the queue knows it: still queued, completed, dead-lettered, or
//! no longer known.
//!
//! Records kept outside Redis (`job_runs` in PostgreSQL) are written after the fact and can
//! miss their last write: a worker killed between a job's acknowledgement and its record, or
//! PostgreSQL down at that moment. Redis is the record of what happened; this is how the
//! reconciliation asks it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ms_to_time, Queue, QueueError};

/// What the queue knows about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whereabouts {
    /// Its data is still in the queue: waiting, running, or scheduled for a retry.
    Queued,
    /// Completed at this time (while its completion is retained).
    Completed(DateTime<Utc>),
    /// Dead-lettered.
    Dead(DeadRecord),
    /// None of these: its completion record was trimmed (`LEADQ_KEEP_DONE*`), its dead letter
    /// purged, or the job was lost.
    Unknown,
}

/// What the dead-letter set holds about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRecord {
    /// When it was dead-lettered.
    pub at: DateTime<Utc>,
    /// Why (`max_attempts`, `poisoned`, a permanent error code…).
    pub reason: String,
    /// The last error code, when one was recorded.
    pub error_code: Option<String>,
    /// Attempts made.
    pub attempts: Option<i32>,
}

impl Queue {
    /// Where each of `ids` (jobs of `kind` of `tenant`) is now, in order; one round trip per
    /// shard. Every shard is asked: a job stays in the shard it was enqueued in, and the
    /// tenant's shard changes when `LEADQ_QUEUE_SHARDS` does.
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
                    .zscore(&k.dead, &id)
                    .hmget(
                        &k.dead_data,
                        &[format!("{id}:r"), format!("{id}:c"), format!("{id}:a")],
                    );
            }
            type Dead = (Option<String>, Option<String>, Option<i32>);
            type Reply = (bool, Option<f64>, Option<f64>, Dead);
            let replies: Vec<Reply> = pipe.query_async(&mut self.conn()).await?;
            for (slot, (queued, done, dead, (reason, code, attempts))) in
                found.iter_mut().zip(replies)
            {
                let here = match (queued, done, dead) {
                    (true, _, _) => Whereabouts::Queued,
                    (_, Some(at), _) => Whereabouts::Completed(ms_to_time(at as i64)),
                    (_, _, Some(at)) => Whereabouts::Dead(DeadRecord {
                        at: ms_to_time(at as i64),
                        reason: reason.unwrap_or_default(),
                        error_code: code.filter(|c| !c.is_empty()),
                        attempts,
                    }),
                    _ => continue,
                };
                // A job still queued anywhere is queued; else the first record found wins.
                if here == Whereabouts::Queued || *slot == Whereabouts::Unknown {
                    *slot = here;
                }
            }
        }
        Ok(found)
    }
}
