//! Group commit of lead changes: the `lead_score` jobs and Chatwoot messages and contact
//! changes of one tenant that are ready at the same moment are written in one transaction,
//! with one statement per step for all of them.
//!
//! Why: a job alone costs six statements and a commit, and on the real lead path PostgreSQL
//! spent most of its time starting statements (plan set-up, row-level security, the per-row
//! triggers) rather than writing rows (docs/bench/lead-path.md, "The real lead path: six statements a
//! job, then a tenant's ready jobs in one transaction"). A batch of `k` jobs costs five round
//! trips in all: begin, the leads' locks, their rows, one write, commit. A Chatwoot message
//! alone took seven ("Chatwoot events: seven statements a job"): its message is one more
//! `insert` in the same write ([`Attached`]), and whether it was stored already comes with its
//! lead's read.
//!
//! How: no extra task and no timer. A job queues its change in its tenant's lane and then
//! either gets its answer or becomes a leader (at most [`LEADERS_PER_TENANT`] at a time per
//! tenant): a leader takes what is queued — up to [`MAX_BATCH`] jobs, one per lead (a second
//! change of a lead waits for the next batch, so it sees the first) — commits it and answers
//! each job. Jobs that arrive while a batch commits form the next one, so batches grow with
//! load and a lone job waits for nobody. At most [`MAX_WRITERS`] batches of all tenants commit
//! at once: a leader waits for a free one before it takes its batch.
//!
//! The rules are the lead store's ([`store::plan`]); the order of the leads' locks is the
//! order of their `external_id`s, so two batches never wait on each other in a cycle. If the
//! batch fails for any reason, every job in it runs alone ([`super::handler::alone`]), each
//! with its own transaction and its own outcome: one bad job never fails the others, and
//! nothing is half-written (the batch's transaction is rolled back).
//!
//! A job whose leader is cancelled (its own timeout) while committing gets a transient error
//! (`group_commit_lost`) and is retried; the batch's transaction rolled back, so the retry
//! writes it once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use leadq_platform::db::{self, Scope};
use leadq_queue::envelope::JobMeta;
use leadq_queue::JobError;
use sqlx::PgPool;
use tokio::sync::{oneshot, Semaphore};
use uuid::Uuid;

use crate::lead::handler::alone;
use crate::lead::store::{self, Applied, Planned, StoreError};
use crate::lead::{shadow, write, Attached, LeadInput};
use crate::pii::Sealer;

/// Jobs written in one batch at most.
pub const MAX_BATCH: usize = 64;

/// Batches of one tenant committing at the same time at most.
pub const LEADERS_PER_TENANT: usize = 2;

/// Batches of all tenants committing at the same time at most: the PostgreSQL connections
/// `lead_score` jobs hold, however many run at once. More jobs in flight then make larger
/// batches, not more connections (a worker running 64 jobs of 50 tenants opened 90 and
/// exhausted a `max_connections = 100` server; docs/bench/plans.md). Eight, not sixteen: a
/// tenant whose leader waits for a writer gathers a larger batch meanwhile, and a batch's
/// statements cost PostgreSQL about the same for three leads as for one. With fifty tenants
/// busy, eight writers scored a tenth to a fifth more leads a second than sixteen, at the
/// same latency (docs/bench/lead-path.md, "Eight writers"); four fell behind the producers.
pub const MAX_WRITERS: usize = 8;

/// Writes `lead_score` changes in batches (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    sealer: Sealer,
    lanes: Mutex<Lanes>,
    /// [`MAX_WRITERS`] permits; a leader holds one while its batch commits.
    writers: Semaphore,
}

/// One tenant's queued changes and its leaders' permits.
struct Lane {
    queue: Mutex<VecDeque<Request>>,
    leaders: Semaphore,
}

/// One job's change and where its outcome goes.
struct Request {
    meta: JobMeta,
    input: LeadInput,
    attached: Attached,
    reply: oneshot::Sender<Result<Option<Applied>, JobError>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Group commit over `pool`, opening and sealing personal fields with `sealer`.
    pub fn new(pool: PgPool, sealer: Sealer) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                sealer,
                lanes: Mutex::new(Lanes::default()),
                writers: Semaphore::new(MAX_WRITERS),
            }),
        }
    }

    /// Applies `input` (and records what is `attached`) for `meta`'s job, in a batch with the
    /// tenant's other ready jobs: what [`alone`] does, with the same outcome. `None`: the lead
    /// was erased after the job was made; nothing was written.
    pub async fn apply(
        &self,
        meta: JobMeta,
        input: LeadInput,
        attached: Attached,
    ) -> Result<Option<Applied>, JobError> {
        let tenant = meta.tenant_id;
        let lane = self.lane(tenant);
        let (reply, mut answer) = oneshot::channel();
        lane.queue.lock().expect("lane lock").push_back(Request {
            meta,
            input,
            attached,
            reply,
        });
        let lost = |_| {
            Err(JobError::transient(
                "group_commit_lost",
                anyhow::anyhow!("the batch holding this job stopped before it answered"),
            ))
        };
        loop {
            tokio::select! {
                biased;
                outcome = &mut answer => return outcome.unwrap_or_else(lost),
                permit = lane.leaders.acquire() => {
                    let _permit = permit.expect("the semaphore is never closed");
                    // The batch is taken once a connection is free, so it holds everything
                    // that queued while the leader waited.
                    let _writer = (self.inner.writers.acquire().await).expect("the semaphore is never closed");
                    let batch = take(&lane.queue, MAX_BATCH);
                    if batch.is_empty() {
                        // Another leader holds this job's change: wait for its answer.
                        return answer.await.unwrap_or_else(lost);
                    }
                    self.inner.commit(tenant, batch).await;
                }
            }
        }
    }

    fn lane(&self, tenant: Uuid) -> Arc<Lane> {
        self.inner.lanes.lock().expect("lanes lock").get(tenant)
    }
}

/// Lanes kept before idle ones are dropped: a worker sees every tenant sooner or later, and a
/// lane nobody uses is a tenant's worth of memory held for the process's life.
const LANES_KEPT: usize = 1024;

/// The lanes by tenant. A lane held only by this map is idle: every job that queued in it,
/// and every leader of it, holds it until the job has its answer (a job that gave up leaves
/// only its closed request, which [`take`] would drop anyway). Idle lanes are dropped when the
/// map reaches `prune_at`, which then doubles past the lanes in use, so a scan happens once per
/// as many new lanes as it kept: amortized constant time per job.
struct Lanes {
    by_tenant: HashMap<Uuid, Arc<Lane>>,
    prune_at: usize,
}

impl Default for Lanes {
    fn default() -> Self {
        Self {
            by_tenant: HashMap::new(),
            prune_at: LANES_KEPT,
        }
    }
}

impl Lanes {
    fn get(&mut self, tenant: Uuid) -> Arc<Lane> {
        if let Some(lane) = self.by_tenant.get(&tenant) {
            return lane.clone();
        }
        if self.by_tenant.len() >= self.prune_at {
            self.by_tenant.retain(|_, lane| Arc::strong_count(lane) > 1);
            self.prune_at = (2 * self.by_tenant.len()).max(LANES_KEPT);
        }
        let lane = Arc::new(Lane {
            queue: Mutex::new(VecDeque::new()),
            leaders: Semaphore::new(LEADERS_PER_TENANT),
        });
        self.by_tenant.insert(tenant, lane.clone());
        lane
    }
}

/// Takes up to `max` queued requests, one per lead, sorted by `external_id` (the lock order);
/// the others stay queued, in order, and those whose job stopped waiting are dropped.
fn take(queue: &Mutex<VecDeque<Request>>, max: usize) -> Vec<Request> {
    let mut queue = queue.lock().expect("lane lock");
    let mut taken: Vec<Request> = Vec::new();
    let mut left = VecDeque::new();
    while let Some(r) = queue.pop_front() {
        if r.reply.is_closed() {
            // Its job gave up waiting (its timeout) and will run again: nothing to write now.
            continue;
        }
        let dup = taken
            .iter()
            .any(|t| t.input.external_id == r.input.external_id);
        if taken.len() < max && !dup {
            taken.push(r);
        } else {
            left.push_back(r);
        }
    }
    *queue = left;
    taken.sort_by(|a, b| a.input.external_id.cmp(&b.input.external_id));
    taken
}

impl Inner {
    /// Commits `batch` together, or each job alone if that fails; answers every job. A batch
    /// of one job goes the same way: five statements where [`alone`] takes six (the audit row
    /// is part of the write), which is every job at low load. If it fails, [`alone`] gives the
    /// job its own outcome, as it does for a larger batch, without the warning: a failed job
    /// is its own report.
    async fn commit(&self, tenant: Uuid, batch: Vec<Request>) {
        let outcome = match self.together(tenant, &batch).await {
            Ok(applied) => Ok(applied),
            Err(_) if batch.len() == 1 => Err(None),
            Err(error) => Err(Some(error)),
        };
        let jobs = batch.len() as u64;
        let count = |outcome: &'static str| {
            use leadq_platform::metrics::{
                label, LEAD_GROUP_COMMITS_TOTAL as C, LEAD_GROUP_COMMIT_JOBS_TOTAL as J,
            };
            metrics::counter!(C, label::OUTCOME => outcome).increment(1);
            metrics::counter!(J, label::OUTCOME => outcome).increment(jobs);
        };
        match outcome {
            Ok(applied) => {
                count("together");
                for (r, a) in batch.into_iter().zip(applied) {
                    let _ = r.reply.send(Ok(a));
                }
            }
            Err(error) => {
                if let Some(error) = error {
                    count("one_by_one");
                    tracing::warn!(error = %error, jobs = batch.len(),
                        "A group commit failed; its jobs run one by one.");
                }
                for r in batch {
                    let a = alone(&self.pool, &self.sealer, &r.meta, &r.input, &r.attached).await;
                    let _ = r.reply.send(a);
                }
            }
        }
    }

    /// The batch in one transaction: lock the leads, read them, plan each change, write all
    /// of them with their history, CRM wishes and audit rows in one statement, commit.
    async fn together(
        &self,
        tenant: Uuid,
        batch: &[Request],
    ) -> Result<Vec<Option<Applied>>, JobError> {
        let ids: Vec<&str> = batch.iter().map(|r| r.input.external_id.as_str()).collect();
        let mut tx = db::begin(&self.pool, Scope::Tenant(tenant)).await?;
        sqlx::query(
            "select pg_advisory_xact_lock(hashtext($1::text), hashtext(x))
               from unnest($2::text[]) as x",
        )
        .bind(tenant)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let messages: Vec<Option<(&str, &str)>> = batch
            .iter()
            .map(|r| {
                r.attached
                    .message()
                    .map(|m| (m.source, m.source_id.as_str()))
            })
            .collect();
        let found = store::read_held(&mut tx, tenant, &ids, &messages).await?;
        let mut plans: Vec<Option<Planned>> = Vec::with_capacity(batch.len());
        // Per job: its message is new and is written with the batch.
        let mut new_messages: Vec<bool> = Vec::with_capacity(batch.len());
        for (r, mut f) in batch.iter().zip(found) {
            if f.erased_for(&r.meta) {
                plans.push(None);
                new_messages.push(false);
                continue;
            }
            new_messages.push(r.attached.message().is_some() && f.count_message());
            let held = match f.stored.take() {
                Some(stored) => f.held(stored, false),
                None => f.held(store::blank(Uuid::new_v4(), &r.input.source), true),
            };
            let p = store::plan(&self.sealer, &r.meta, &r.input, held).map_err(StoreError::from)?;
            plans.push(Some(p));
        }
        let wishes = write_all(&mut tx, &self.sealer, tenant, batch, &plans, &new_messages).await?;
        let mut out = Vec::with_capacity(batch.len());
        for (r, p) in batch.iter().zip(plans) {
            let Some(p) = p else {
                out.push(None);
                continue;
            };
            let sync = wishes.get(&p.lead.id).copied().flatten();
            let applied = p.applied(sync);
            shadow::record_applied(&mut tx, &r.meta, r.attached.kind(), &applied).await?;
            out.push(Some(applied));
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// Writes every changed lead of the batch with its history row, the CRM wishes of qualified
/// leads, the jobs' new messages (`new_messages`, by position) and their audit rows: one
/// statement ([`write`]). Returns each wished lead's unsynced version.
async fn write_all(
    conn: &mut sqlx::PgConnection,
    sealer: &Sealer,
    tenant: Uuid,
    batch: &[Request],
    plans: &[Option<Planned>],
    new_messages: &[bool],
) -> Result<HashMap<Uuid, Option<i64>>, StoreError> {
    let mut rows = write::Rows::default();
    for ((r, p), new_message) in batch.iter().zip(plans).zip(new_messages) {
        let Some(p) = p else { continue };
        if p.changed {
            let (external_id, message_id) = (&r.input.external_id, &r.meta.message_id);
            rows.version(sealer, tenant, external_id, message_id, &p.lead);
        }
        if let (true, Some(m)) = (*new_message, r.attached.message()) {
            rows.message(sealer, tenant, p.lead.id, m);
        }
        if p.wished() {
            rows.wish(p.lead.id, p.lead.version);
        }
        let applied = p.view();
        for (action, subject, details) in r.attached.audit_entries(&r.meta, &applied) {
            let (actor, correlation_id) = (r.meta.user_id.clone(), r.meta.correlation_id.clone());
            rows.audit(actor, action, subject, correlation_id, details);
        }
    }
    write::write(conn, tenant, &rows).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` tenants seen once each, none of their lanes held afterwards: the map stays within
    /// what it keeps (plus the one lane the test holds).
    fn see_idle_tenants(lanes: &mut Lanes, n: usize) {
        for _ in 0..n {
            drop(lanes.get(Uuid::new_v4()));
        }
        let kept = lanes.by_tenant.len();
        assert!(kept <= LANES_KEPT + 1, "{kept} lanes kept");
    }

    #[test]
    fn idle_lanes_are_dropped_and_lanes_in_use_are_kept() {
        let mut lanes = Lanes::default();
        let busy = Uuid::new_v4();
        let held = lanes.get(busy);
        for _ in 0..10 {
            see_idle_tenants(&mut lanes, LANES_KEPT);
        }
        // The lane a job holds survived every pruning: its queue and leaders are the same.
        assert!(Arc::ptr_eq(&held, &lanes.get(busy)));
        // Lanes all in use are never dropped: the map grows past them, and prunes again once
        // it has doubled.
        let in_use: Vec<(Uuid, Arc<Lane>)> = (0..3 * LANES_KEPT)
            .map(|_| {
                let t = Uuid::new_v4();
                (t, lanes.get(t))
            })
            .collect();
        for (t, lane) in &in_use {
            assert!(Arc::ptr_eq(lane, &lanes.get(*t)));
        }
        drop(in_use);
        see_idle_tenants(&mut lanes, 4 * LANES_KEPT);
        assert!(Arc::ptr_eq(&held, &lanes.get(busy)));
    }
}
