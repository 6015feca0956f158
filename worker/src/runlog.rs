//! `job_runs` written by group commit, off the job's critical path.
//!
//! Every run hands over two rows: "running" when it starts, the outcome once the job is
//! settled in Redis. One transaction per write made these two of a lead's four PostgreSQL
//! transactions; and waiting for them, even group-committed, held the run's concurrency slot
//! for 43 % of its time (docs/bench/lead-path.md, "Where a run's time goes"). So a run hands its rows to
//! one writer task per process and goes on; the writer takes everything waiting, commits it
//! in one transaction (one upsert for every tenant's rows, under the scope `run-recorder`,
//! which row-level security lets write `job_runs` and nothing else; a job named twice in a
//! batch takes a second upsert), and takes the next batch. Idle, that is one transaction per
//! write; under load a batch grows to what arrived during the previous commit (at most
//! [`MAX_BATCH`]).
//!
//! A start is held back for up to [`START_HOLD`]: most runs end sooner, and their outcome is
//! then the only write (it carries the run's start, its time less the run's duration). The
//! upsert was the worker's costliest statement after the lead's own, two row versions a job.
//!
//! What it changes, and why that is safe:
//! - **Order.** The writer is one FIFO, so a job's start is always written before its outcome
//!   (or not at all), and a retry's rows after the attempt before.
//! - **Freshness.** `job_runs` trails Redis by one batch (milliseconds), a start by at most
//!   [`START_HOLD`] more; Redis is the source of truth for where a job is
//!   (`leadq_queue::whereabouts`), `job_runs` is its history. Its times are the worker's clock
//!   when the run started and ended, not the commit's.
//! - **Back-pressure.** At most [`QUEUE_ROWS`] rows wait; beyond that a run waits for room, so
//!   a PostgreSQL outage slows the workers instead of growing memory.
//! - **Shutdown and crashes.** The worker calls [`RunLog::flush`] after its last job, so a
//!   graceful stop loses nothing (held starts included). A killed process loses the rows still
//!   waiting (at most one batch in flight, what queued behind it, and the starts held);
//!   `job_runs_reconcile` sets rows left `running` to what Redis knows, and a run whose rows
//!   were all lost is still in Redis and in the audit trail.
//! - **Failure.** A failed batch is logged with its size (best effort, as before).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use leadq_platform::db;
use leadq_queue::envelope::JobMeta;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

/// The most rows one transaction writes.
pub const MAX_BATCH: usize = 512;
/// The most rows waiting for the writer before runs wait for room.
pub const QUEUE_ROWS: usize = 65_536;
/// How long a run's start waits for its outcome before it is written on its own.
pub const START_HOLD: Duration = Duration::from_secs(1);

/// One write of a run's row.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// The job.
    pub job_id: Uuid,
    /// Its tenant (the row's RLS scope).
    pub tenant_id: Uuid,
    /// The kind.
    pub kind: String,
    /// The producer's message id.
    pub message_id: String,
    /// The correlation id.
    pub correlation_id: String,
    /// The principal the run acted for (the envelope's `user_id`).
    pub user_id: String,
    /// `running` (a start), `retrying`, `completed` or `dead`.
    pub status: &'static str,
    /// The attempt.
    pub attempts: i32,
    /// When the job was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// Handler run time (outcomes only).
    pub duration_ms: Option<i64>,
    /// The failed run's error code (outcomes only).
    pub error_code: Option<&'static str>,
    /// The run is over for good (`completed` or `dead`): `finished_at` becomes [`RunRow::at`].
    pub finished: bool,
    /// When the run started (a start) or ended (an outcome), by the worker's clock.
    pub at: DateTime<Utc>,
}

impl RunRow {
    /// The start of `meta`'s run.
    pub fn start(meta: &JobMeta) -> Self {
        Self::outcome(meta, "running", Duration::ZERO, None, false)
    }

    /// The outcome of `meta`'s run (`status` as in [`RunRow::status`]).
    pub fn outcome(
        meta: &JobMeta,
        status: &'static str,
        duration: Duration,
        error_code: Option<&'static str>,
        finished: bool,
    ) -> Self {
        let running = status == "running";
        Self {
            job_id: meta.job_id,
            tenant_id: meta.tenant_id,
            kind: meta.action.clone(),
            message_id: meta.message_id.clone(),
            correlation_id: meta.correlation_id.clone(),
            user_id: meta.user_id.clone(),
            status,
            attempts: i32::try_from(meta.attempt).unwrap_or(i32::MAX),
            enqueued_at: meta.timestamp,
            duration_ms: (!running)
                .then(|| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)),
            error_code,
            finished,
            at: Utc::now(),
        }
    }

    /// When the run started: [`RunRow::at`] for a start, less the run's duration for an
    /// outcome.
    fn started_at(&self) -> DateTime<Utc> {
        let ran = chrono::Duration::milliseconds(self.duration_ms.unwrap_or(0));
        self.at - ran
    }
}

/// What the writer is handed: a row, or a request to say when everything before it is
/// committed.
enum Item {
    Row(RunRow),
    Flush(oneshot::Sender<()>),
}

/// The handle every run's observer writes through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RunLog {
    tx: mpsc::Sender<Item>,
}

impl RunLog {
    /// Starts the writer task on the current runtime. It ends when the last handle is dropped,
    /// after writing what was handed to it.
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_ROWS);
        tokio::spawn(writer(pool, rx));
        Self { tx }
    }

    /// Hands `row` to the writer; waits only while [`QUEUE_ROWS`] rows are already waiting.
    pub async fn write(&self, row: RunRow) {
        let _ = self.tx.send(Item::Row(row)).await;
    }

    /// Resolves once every row handed over before this call is committed (or its batch
    /// failed, which is logged).
    pub async fn flush(&self) {
        let (done, committed) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).await.is_ok() {
            let _ = committed.await;
        }
    }
}

async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Item>) {
    let mut batch: Vec<Item> = Vec::new();
    let mut held = Held::default();
    loop {
        let open = match held.next_due() {
            Some(due) => tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => n > 0,
                () = tokio::time::sleep_until(due) => true,
            },
            None => rx.recv_many(&mut batch, MAX_BATCH).await > 0,
        };
        let mut rows: Vec<RunRow> = Vec::new();
        let mut flushed = Vec::new();
        for item in batch.drain(..) {
            match item {
                Item::Row(row) if row.status == "running" => held.hold(row),
                Item::Row(row) => {
                    held.forget(&row);
                    rows.push(row);
                }
                Item::Flush(done) => {
                    rows.extend(held.take_all());
                    flushed.push(done);
                }
            }
        }
        if open {
            rows.extend(held.take_due(Instant::now()));
        } else {
            rows.extend(held.take_all());
        }
        if !rows.is_empty() {
            let refs: Vec<&RunRow> = rows.iter().collect();
            if let Err(error) = commit(&pool, &refs).await {
                tracing::warn!(error = %error, rows = rows.len(),
                    "Could not record a batch of job runs.");
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
        if !open {
            return;
        }
    }
}

/// Starts waiting for their outcome, oldest first ([`START_HOLD`]).
#[derive(Default)]
struct Held {
    rows: HashMap<Uuid, (Instant, RunRow)>,
    order: VecDeque<(Instant, Uuid)>,
}

impl Held {
    fn hold(&mut self, row: RunRow) {
        let due = Instant::now() + START_HOLD;
        self.order.push_back((due, row.job_id));
        self.rows.insert(row.job_id, (due, row));
    }

    /// `outcome` came: its run's start, if still held, is not written. A held start of
    /// another attempt (the retry's start handed over before this outcome) stays.
    fn forget(&mut self, outcome: &RunRow) {
        let job = outcome.job_id;
        if self
            .rows
            .get(&job)
            .is_some_and(|(_, start)| start.attempts == outcome.attempts)
        {
            self.rows.remove(&job);
        }
    }

    fn next_due(&mut self) -> Option<Instant> {
        while let Some(&(due, job)) = self.order.front() {
            if self.rows.get(&job).is_some_and(|(d, _)| *d == due) {
                return Some(due);
            }
            self.order.pop_front();
        }
        None
    }

    fn take_due(&mut self, now: Instant) -> Vec<RunRow> {
        let mut out = Vec::new();
        while self.next_due().is_some_and(|due| due <= now) {
            if let Some((_, job)) = self.order.pop_front() {
                out.extend(self.rows.remove(&job).map(|(_, row)| row));
            }
        }
        out
    }

    fn take_all(&mut self) -> Vec<RunRow> {
        self.order.clear();
        let mut rows: Vec<(Instant, RunRow)> = self.rows.drain().map(|(_, r)| r).collect();
        rows.sort_by_key(|(due, _)| *due);
        rows.into_iter().map(|(_, row)| row).collect()
    }
}

/// The row-level-security scope the writer commits under: `job_runs` rows of every tenant
/// (migration `20261219000300`), nothing else.
const SCOPE: &str = "run-recorder";

/// Writes `rows` in one transaction, in arrival order, one upsert per round (a round never
/// names a job twice, which one `insert … on conflict` statement cannot do).
async fn commit(pool: &PgPool, rows: &[&RunRow]) -> Result<(), sqlx::Error> {
    let mut tx = db::begin_service(pool, SCOPE).await?;
    for round in rounds(rows) {
        upsert(&mut tx, &round).await?;
    }
    tx.commit().await
}

/// Splits `rows` into rounds, keeping each job's writes in arrival order and never naming one
/// job twice in a round: a row goes to the round after the last one that names its job.
fn rounds<'a>(rows: &[&'a RunRow]) -> Vec<Vec<&'a RunRow>> {
    let mut out: Vec<Vec<&RunRow>> = Vec::new();
    let mut next: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    for row in rows {
        let round = next.get(&row.job_id).copied().unwrap_or(0);
        if round == out.len() {
            out.push(Vec::new());
        }
        out[round].push(row);
        next.insert(row.job_id, round + 1);
    }
    out
}

async fn upsert(tx: &mut sqlx::PgConnection, rows: &[&RunRow]) -> Result<(), sqlx::Error> {
    let tenants: Vec<Uuid> = rows.iter().map(|r| r.tenant_id).collect();
    let job_ids: Vec<Uuid> = rows.iter().map(|r| r.job_id).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    let message_ids: Vec<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
    let correlation_ids: Vec<&str> = rows.iter().map(|r| r.correlation_id.as_str()).collect();
    let user_ids: Vec<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.attempts).collect();
    let enqueued: Vec<DateTime<Utc>> = rows.iter().map(|r| r.enqueued_at).collect();
    let durations: Vec<Option<i64>> = rows.iter().map(|r| r.duration_ms).collect();
    let codes: Vec<Option<&str>> = rows.iter().map(|r| r.error_code).collect();
    let finished: Vec<bool> = rows.iter().map(|r| r.finished).collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.at).collect();
    let started: Vec<DateTime<Utc>> = rows.iter().map(|r| r.started_at()).collect();
    // Every row moves `last_started_at` to its run's start; a start leaves the last outcome's
    // duration and finish time, an outcome sets them. The first write of a job inserts its row.
    sqlx::query(
        "insert into job_runs (job_id, tenant_id, kind, message_id, correlation_id, status,
                               attempts, enqueued_at, first_started_at, last_started_at,
                               finished_at, duration_ms, last_error_code, user_id)
         select r.job_id, r.tenant_id, r.kind, r.message_id, r.correlation_id, r.status, r.attempts,
                r.enqueued_at, r.started_at, r.started_at, case when r.finished then r.at end,
                r.duration_ms, r.error_code, r.user_id
           from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::int4[], $8::timestamptz[], $9::int8[], $10::text[], $11::bool[],
                       $12::text[], $13::timestamptz[], $14::timestamptz[])
                as r(tenant_id, job_id, kind, message_id, correlation_id, status, attempts,
                     enqueued_at, duration_ms, error_code, finished, user_id, at, started_at)
         on conflict (job_id) do update set
             status = excluded.status,
             user_id = excluded.user_id,
             attempts = excluded.attempts,
             last_started_at = excluded.last_started_at,
             duration_ms = case when excluded.status = 'running' then job_runs.duration_ms
                                else excluded.duration_ms end,
             finished_at = case when excluded.status = 'running' then job_runs.finished_at
                                else excluded.finished_at end,
             last_error_code = coalesce(excluded.last_error_code, job_runs.last_error_code),
             updated_at = now()",
    )
    .bind(tenants)
    .bind(job_ids)
    .bind(kinds)
    .bind(message_ids)
    .bind(correlation_ids)
    .bind(statuses)
    .bind(attempts)
    .bind(enqueued)
    .bind(durations)
    .bind(codes)
    .bind(finished)
    .bind(user_ids)
    .bind(at)
    .bind(started)
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: u128, job: u128, status: &'static str) -> RunRow {
        RunRow {
            job_id: Uuid::from_u128(job),
            tenant_id: Uuid::from_u128(tenant),
            kind: "lead_score".into(),
            message_id: "m".into(),
            correlation_id: "c".into(),
            user_id: "api_key:t".into(),
            status,
            attempts: 1,
            enqueued_at: Utc::now(),
            duration_ms: None,
            error_code: None,
            finished: false,
            at: Utc::now(),
        }
    }

    fn shape(rounds: &[Vec<&RunRow>]) -> Vec<Vec<(u128, u128, &'static str)>> {
        rounds
            .iter()
            .map(|g| {
                (g.iter())
                    .map(|r| (r.tenant_id.as_u128(), r.job_id.as_u128(), r.status))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn an_outcome_drops_its_own_attempts_start_only() {
        let mut held = Held::default();
        let mut retry = row(1, 10, "running");
        retry.attempts = 2;
        held.hold(retry.clone());
        held.hold(row(1, 11, "running"));
        // The first attempt's outcome, handed over after the retry's start: the start stays.
        held.forget(&row(1, 10, "retrying"));
        held.forget(&row(1, 11, "completed"));
        let left = held.take_all();
        assert_eq!(
            left.iter()
                .map(|r| (r.job_id.as_u128(), r.attempts))
                .collect::<Vec<_>>(),
            [(10, 2)]
        );
        held.hold(retry.clone());
        retry.status = "completed";
        held.forget(&retry);
        assert!(held.take_all().is_empty());
    }

    #[test]
    fn one_round_for_every_tenant_when_no_job_repeats() {
        let rows = [
            row(1, 10, "running"),
            row(2, 20, "running"),
            row(1, 11, "running"),
        ];
        let refs: Vec<&RunRow> = rows.iter().collect();
        assert_eq!(
            shape(&rounds(&refs)),
            vec![vec![
                (1, 10, "running"),
                (2, 20, "running"),
                (1, 11, "running")
            ]]
        );
    }

    #[test]
    fn a_repeated_job_goes_to_a_later_round_in_order() {
        let rows = [
            row(1, 10, "retrying"),
            row(2, 11, "running"),
            row(1, 10, "running"),
            row(2, 11, "completed"),
            row(1, 10, "completed"),
            row(1, 12, "running"),
        ];
        let refs: Vec<&RunRow> = rows.iter().collect();
        assert_eq!(
            shape(&rounds(&refs)),
            vec![
                vec![(1, 10, "retrying"), (2, 11, "running"), (1, 12, "running")],
                vec![(1, 10, "running"), (2, 11, "completed")],
                vec![(1, 10, "completed")],
            ]
        );
    }
}
