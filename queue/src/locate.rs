//! One job by id, as the queue knows it now: its kind, its tenant and its state (pending,
//! held, scheduled, running, done, dead); and the job a producer's message id became.
//!
//! Why: an operator searching the console has a job id (from a log line, a `job_runs` row, an
//! `Enqueued` reply) or a producer's message id, and no kind or tenant to go with it.
//! `job_runs` in PostgreSQL is written after the fact and knows nothing of a job that has not
//! run yet, so the live answer has to come from Redis. [`whereabouts`](crate::whereabouts)
//! answers a narrower question (queued / completed / dead, for reconciliation) for many ids of
//! a known kind and tenant; this tells one job's state in full.
//!
//! Each (kind, shard) is asked with one read-only script call (`lua/locate.lua`), so the state
//! is read at one instant: a job moving between sets while it is read cannot show up in none
//! (or two) of them. A dead letter costs one more round trip, to read its record.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{ms_to_time, valid_kind, DeadLetter, Queue, QueueError};

/// Where one job is now, and what the queue still keeps about it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    /// Its kind.
    pub kind: String,
    /// Its tenant. `None` once it completed: a finished job's data is deleted and `done`
    /// keeps only its id and completion time.
    pub tenant: Option<Uuid>,
    /// Its state.
    pub state: JobState,
    /// Attempts started so far (the running one included); 0 when it has not started, or
    /// when it completed (not kept).
    pub attempts: u32,
    /// The error code of its last failed attempt, if one failed (dead letters: the last
    /// error code recorded with them).
    pub last_error_code: Option<String>,
}

/// The state of one job in its queue.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Ready: it starts when its tenant's turn comes and a worker is free.
    Pending,
    /// Ready but held back: its tenant is paused for the kind, or is at its concurrency cap
    /// (its slot is parked). It starts after a resume, or as the tenant's running jobs finish.
    Held,
    /// Waiting for a retry delay, a rate limit or its `run_at`.
    Scheduled {
        /// When it becomes ready.
        due: DateTime<Utc>,
    },
    /// Leased by a worker, running now.
    Running {
        /// The worker's id (`<host>-<pid>-<random>`, as `GET /v1/status` lists workers).
        worker: String,
        /// When the lease runs out unless the worker renews it (Redis clock).
        lease_deadline: DateTime<Utc>,
    },
    /// Completed (while `done` keeps it: `LEADQ_KEEP_DONE`, `LEADQ_KEEP_DONE_SECS`).
    Done {
        /// When it completed.
        at: DateTime<Utc>,
    },
    /// Dead-lettered: the record the dead-letter operations read.
    Dead {
        /// The dead letter.
        letter: Box<DeadLetter>,
    },
}

/// Parses a score the script returned (ms since the epoch).
fn time(ms: &str) -> Result<DateTime<Utc>, QueueError> {
    ms.parse::<f64>()
        .map(|ms| ms_to_time(ms as i64))
        .map_err(|_| QueueError::Protocol(format!("locate: time {ms:?}")))
}

impl Queue {
    /// Finds the job `job_id` among `kinds`, in every shard (`0..LEADQ_QUEUE_SHARDS`: a job
    /// stays in the shard it was enqueued in, whatever the shard count is now). One script
    /// call per (kind, shard) until it is found, in the order of `kinds`, plus one round trip
    /// for a dead letter's record. `None`: no kind and shard knows it (never enqueued, its
    /// completion trimmed from `done`, its dead letter purged or expired).
    pub async fn locate(
        &self,
        kinds: &[&str],
        job_id: Uuid,
    ) -> Result<Option<Located>, QueueError> {
        let id = job_id.to_string();
        for kind in kinds {
            if !valid_kind(kind) {
                return Err(QueueError::Invalid(format!("bad kind {kind:?}")));
            }
            for shard in self.shards() {
                let k = self.keys(kind, shard);
                let reply: Vec<String> = self
                    .scripts()
                    .locate
                    .key(&k.jobs)
                    .key(&k.leases)
                    .key(&k.scheduled)
                    .key(&k.ready)
                    .key(&k.parked)
                    .key(&k.fair)
                    .key(&k.done)
                    .key(&k.dead)
                    .arg(&id)
                    .invoke_async(&mut self.conn())
                    .await?;
                let [state, at, owner, tenant, attempts, error] = reply.as_slice() else {
                    return Err(QueueError::Protocol("locate reply shape".into()));
                };
                let mut found = Located {
                    kind: (*kind).to_owned(),
                    tenant: tenant.parse().ok(),
                    state: JobState::Pending,
                    attempts: attempts.parse().unwrap_or(0),
                    last_error_code: Some(error.clone()).filter(|e| !e.is_empty()),
                };
                found.state = match state.as_str() {
                    "none" => continue,
                    "pending" => JobState::Pending,
                    "held" => JobState::Held,
                    "scheduled" => JobState::Scheduled { due: time(at)? },
                    "running" => JobState::Running {
                        // The owner is `<worker id>:<attempt>#<fetch number>`.
                        worker: owner
                            .rsplit_once(':')
                            .map_or(owner.as_str(), |(w, _)| w)
                            .to_owned(),
                        lease_deadline: time(at)?,
                    },
                    "done" => JobState::Done { at: time(at)? },
                    "dead" => {
                        let entry = (id.clone(), time(at)?.timestamp_millis());
                        let letter = self
                            .dead_by_ids(kind, shard, &[entry])
                            .await?
                            .pop()
                            .ok_or_else(|| QueueError::Protocol("dead letter missing".into()))?;
                        found.tenant = letter.envelope.as_ref().map(|e| e.tenant_id);
                        found.attempts = letter.attempts;
                        found.last_error_code =
                            Some(letter.last_error_code.clone()).filter(|e| !e.is_empty());
                        JobState::Dead {
                            letter: Box::new(letter),
                        }
                    }
                    other => {
                        return Err(QueueError::Protocol(format!("locate: state {other:?}")));
                    }
                };
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The job `message_id` of `tenant` became in `kind`'s queue: the id its dedupe key holds
    /// (`lua/enqueue.lua` stores the first job's id there, and a duplicate is refused against
    /// it). `None` once the key expired (`LEADQ_DEDUPE_TTL_SECS` after the enqueue, or after
    /// the `run_at` of a job due later) or if the message was never enqueued. The id may name
    /// a job that has since finished: ask [`Queue::locate`] where it is. The tenant's shard is
    /// asked first, then the others (the key stays in the shard of the enqueue when
    /// `LEADQ_QUEUE_SHARDS` changes), one `GET` each until it is found.
    pub async fn job_for_message(
        &self,
        kind: &str,
        tenant: Uuid,
        message_id: &str,
    ) -> Result<Option<Uuid>, QueueError> {
        if !valid_kind(kind) {
            return Err(QueueError::Invalid(format!("bad kind {kind:?}")));
        }
        if !crate::envelope::valid_id(message_id) {
            return Err(QueueError::Invalid("message_id".into()));
        }
        let home = self.shard_of(&tenant);
        for shard in std::iter::once(home).chain(self.shards().filter(|s| *s != home)) {
            let held: Option<String> = redis::cmd("GET")
                .arg(self.keys(kind, shard).dedupe(&tenant, message_id))
                .query_async(&mut self.conn())
                .await?;
            if let Some(id) = held {
                return id
                    .parse()
                    .map(Some)
                    .map_err(|_| QueueError::Protocol("dedupe key holds a non-id".into()));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_tagged_in_snake_case() {
        let at = ms_to_time(1_700_000_000_000);
        let j = |s: JobState| serde_json::to_value(s).unwrap();
        assert_eq!(j(JobState::Held), serde_json::json!({"state": "held"}));
        assert_eq!(
            j(JobState::Running {
                worker: "w".into(),
                lease_deadline: at
            }),
            serde_json::json!({"state": "running", "worker": "w", "lease_deadline": at})
        );
        assert_eq!(
            j(JobState::Scheduled { due: at }),
            serde_json::json!({"state": "scheduled", "due": at})
        );
        assert!(time("1700000000000").is_ok() && time("x").is_err());
    }
}
