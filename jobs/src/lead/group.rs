//! Group commit of lead changes: the `lead_score` jobs and Chatwoot messages and contact
//! changes of one tenant that are ready at the same moment are written in one transaction,
//! with one statement per step for all of them.
//!
//! Why: a job alone costs six statements and a commit, and on the real lead path PostgreSQL
//! spent most of its time starting statements (plan set-up, row-level security, the per-row
//! triggers) rather than writing rows (docs/bench.md, "The real lead path: six statements a
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
use sqlx::{PgPool, Row};
use tokio::sync::{oneshot, Semaphore};
use uuid::Uuid;

use crate::lead::handler::alone;
use crate::lead::store::{self, Applied, Planned, StoreError};
use crate::lead::{shadow, Attached, LeadInput};
use crate::pii::{field, Sealer};

/// Jobs written in one batch at most.
pub const MAX_BATCH: usize = 64;

/// Batches of one tenant committing at the same time at most.
pub const LEADERS_PER_TENANT: usize = 2;

/// Batches of all tenants committing at the same time at most: the PostgreSQL connections
/// `lead_score` jobs hold, however many run at once. More jobs in flight then make larger
/// batches, not more connections (a worker running 64 jobs of 50 tenants opened 90 and
/// exhausted a `max_connections = 100` server; docs/bench.md).
pub const MAX_WRITERS: usize = 16;

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

/// Writes every changed lead of the batch (new ones inserted whole, others updated), its
/// `lead_scores` row, the CRM wishes of qualified leads, the jobs' new messages
/// (`new_messages`, by position) and their audit rows: one statement. Returns each wished lead's unsynced version ([`store::unsynced`]).
///
/// Every lead goes through one `insert … on conflict (tenant_id, external_id) do update`: an
/// existing lead is found by a probe of its primary key, whatever the table's statistics say.
/// An `update … from` the batch left that to the planner, and the statement's reusable plan,
/// made while a tenant had a few leads, went on scanning all of them in every batch as the
/// tenant grew (a quarter of the statement's time at `--tenants 50`: docs/bench.md). The
/// update applies only to the row the batch read and locked (`l.id = excluded.id`): a lead it
/// found missing but that exists now is not overwritten, and the batch fails (the lead is not
/// counted, and its history row names no lead), so its jobs run one by one, as the unique
/// violation of a plain insert made them.
async fn write_all(
    conn: &mut sqlx::PgConnection,
    sealer: &Sealer,
    tenant: Uuid,
    batch: &[Request],
    plans: &[Option<Planned>],
    new_messages: &[bool],
) -> Result<HashMap<Uuid, Option<i64>>, JobError> {
    let mut v = Columns::default();
    let mut wish: (Vec<Uuid>, Vec<i64>) = Default::default();
    let mut audit = AuditColumns::default();
    let mut messages = MessageColumns::default();
    for ((r, p), new_message) in batch.iter().zip(plans).zip(new_messages) {
        let Some(p) = p else { continue };
        if p.changed {
            v.push(sealer, tenant, r, p);
        }
        if let (true, Some(m)) = (*new_message, r.attached.message()) {
            messages.push(sealer, tenant, p.lead.id, m);
        }
        if p.lead.qualified_at.is_some() {
            wish.0.push(p.lead.id);
            wish.1.push(p.lead.version);
        }
        let applied = p.view();
        for (action, subject, details) in r.attached.audit_entries(&r.meta, &applied) {
            audit.actor.push(r.meta.user_id.clone());
            audit.action.push(action.to_owned());
            audit.subject.push(subject);
            audit.correlation_id.push(r.meta.correlation_id.clone());
            audit.details.push(details);
        }
    }
    let wish_sql = store::want_sync_sql(
        "select $1::uuid, w.id, w.version from unnest($19::uuid[], $20::int8[]) as w(id, version)",
    );
    let sql = format!(
        "with v as (
             select * from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::int4[],
                                  $12::text[], $13::jsonb[], $14::int8[], $15::timestamptz[],
                                  $16::text[], $17::text[], $18::text[])
                 as v(id, external_id, source, name, username, phone, email, answers, campaign,
                      score, tier, reasons, version, qualified_at, message_id, phone_index,
                      email_index)),
         written as (
             insert into leads as l (tenant_id, id, external_id, source, name, username, phone,
                                     email, answers, campaign, score, tier, reasons, version,
                                     qualified_at, scored_at, last_message_id, phone_index,
                                     email_index)
             select $1, id, external_id, source, name, username, phone, email, answers, campaign,
                    score, tier, reasons, version, qualified_at, now(), message_id, phone_index,
                    email_index
               from v
             on conflict (tenant_id, external_id) do update
                set name = excluded.name, username = excluded.username, phone = excluded.phone,
                    email = excluded.email, answers = excluded.answers,
                    campaign = excluded.campaign, score = excluded.score, tier = excluded.tier,
                    reasons = excluded.reasons, version = excluded.version,
                    qualified_at = excluded.qualified_at, scored_at = excluded.scored_at,
                    last_message_id = excluded.last_message_id, updated_at = now(),
                    phone_index = excluded.phone_index, email_index = excluded.email_index
              where l.id = excluded.id
             returning l.id),
         history as (
             insert into lead_scores (tenant_id, lead_id, version, score, tier, reasons, message_id)
             select $1, id, version, score, tier, reasons, message_id from v),
         wish as ({wish_sql}),
         audited as (
             insert into audit_log (tenant_id, actor, action, subject, outcome, correlation_id,
                                    details)
             select $1, a.actor, a.action, a.subject, 'ok', a.correlation_id, a.details
               from unnest($21::text[], $22::text[], $23::text[], $24::text[], $25::jsonb[])
                 as a(actor, action, subject, correlation_id, details)),
         messages as (
             insert into lead_messages (tenant_id, lead_id, source, source_id, conversation_id,
                                        content, sent_at)
             select $1, m.lead_id, m.source, m.source_id, m.conversation_id, m.content, m.sent_at
               from unnest($26::uuid[], $27::text[], $28::text[], $29::int8[], $30::text[],
                           $31::timestamptz[])
                 as m(lead_id, source, source_id, conversation_id, content, sent_at)
             on conflict (tenant_id, source, source_id) do nothing
             returning 1)
         select n.written, n.messages, w.lead_id, w.wanted_version, w.synced_version
           from (select (select count(*) from written) as written,
                        (select count(*) from messages) as messages) n
           left join wish w on true"
    );
    let (changed, new) = (v.id.len(), messages.lead_id.len());
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(&v.id)
        .bind(&v.external_id)
        .bind(&v.source)
        .bind(&v.name)
        .bind(&v.username)
        .bind(&v.phone)
        .bind(&v.email)
        .bind(&v.answers)
        .bind(&v.campaign)
        .bind(&v.score)
        .bind(&v.tier)
        .bind(&v.reasons)
        .bind(&v.version)
        .bind(&v.qualified_at)
        .bind(&v.message_id)
        .bind(&v.phone_index)
        .bind(&v.email_index)
        .bind(&wish.0)
        .bind(&wish.1)
        .bind(&audit.actor)
        .bind(&audit.action)
        .bind(&audit.subject)
        .bind(&audit.correlation_id)
        .bind(&audit.details)
        .bind(&messages.lead_id)
        .bind(&messages.source)
        .bind(&messages.source_id)
        .bind(&messages.conversation_id)
        .bind(&messages.content)
        .bind(&messages.sent_at)
        .fetch_all(conn)
        .await?;
    let mut wishes = HashMap::new();
    for row in &rows {
        let written: i64 = row.try_get("written")?;
        let stored: i64 = row.try_get("messages")?;
        if usize::try_from(stored).ok() != Some(new) {
            // A message the lead read found missing was stored meanwhile (under another lead:
            // never expected); counted in this lead's score, it would be wrong. The jobs run
            // alone instead, where a message stored already is not counted.
            return Err(JobError::transient(
                "group_commit_mismatch",
                anyhow::anyhow!("stored {stored} of {new} new messages"),
            ));
        }
        if usize::try_from(written).ok() != Some(changed) {
            // A lead held for update vanished: never expected; the jobs run alone instead.
            return Err(JobError::transient(
                "group_commit_mismatch",
                anyhow::anyhow!("wrote {written} of {changed} lead versions"),
            ));
        }
        let lead: Option<Uuid> = row.try_get("lead_id")?;
        if let Some(lead) = lead {
            let wanted: i64 = row.try_get("wanted_version")?;
            let synced: i64 = row.try_get("synced_version")?;
            wishes.insert(lead, store::unsynced(Some((wanted, synced))));
        }
    }
    Ok(wishes)
}

/// The batch's new lead versions, column by column (`unnest` reads them back as rows).
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    external_id: Vec<String>,
    source: Vec<String>,
    name: Vec<Option<String>>,
    username: Vec<Option<String>>,
    phone: Vec<Option<String>>,
    email: Vec<Option<String>>,
    answers: Vec<serde_json::Value>,
    campaign: Vec<Option<String>>,
    score: Vec<Option<i32>>,
    tier: Vec<Option<String>>,
    reasons: Vec<serde_json::Value>,
    version: Vec<i64>,
    qualified_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    message_id: Vec<String>,
    phone_index: Vec<Option<String>>,
    email_index: Vec<Option<String>>,
}

impl Columns {
    /// Adds `p`'s new version, its personal fields sealed for rest.
    fn push(&mut self, sealer: &Sealer, tenant: Uuid, r: &Request, p: &Planned) {
        let l = &p.lead;
        let c = sealer.seal_for_rest(
            tenant,
            l.name.as_deref(),
            l.username.as_deref(),
            l.phone.as_deref(),
            l.email.as_deref(),
        );
        self.id.push(l.id);
        self.external_id.push(r.input.external_id.clone());
        self.source.push(l.source.clone());
        self.name.push(c.name);
        self.username.push(c.username);
        self.phone.push(c.phone);
        self.email.push(c.email);
        self.answers.push(serde_json::json!(l.answers.0));
        self.campaign.push(l.campaign.clone());
        self.score.push(l.score);
        self.tier.push(l.tier.clone());
        self.reasons.push(serde_json::json!(l.reasons.0));
        self.version.push(l.version);
        self.qualified_at.push(l.qualified_at);
        self.message_id.push(r.meta.message_id.clone());
        self.phone_index.push(c.phone_index);
        self.email_index.push(c.email_index);
    }
}

/// The batch's new messages, column by column, their text sealed.
#[derive(Default)]
struct MessageColumns {
    lead_id: Vec<Uuid>,
    source: Vec<&'static str>,
    source_id: Vec<String>,
    conversation_id: Vec<Option<i64>>,
    content: Vec<Option<String>>,
    sent_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl MessageColumns {
    fn push(&mut self, sealer: &Sealer, tenant: Uuid, lead_id: Uuid, m: &crate::lead::Inbound) {
        self.lead_id.push(lead_id);
        self.source.push(m.source);
        self.source_id.push(m.source_id.clone());
        self.conversation_id.push(m.conversation_id);
        self.content.push(
            m.content
                .as_deref()
                .map(|c| sealer.seal(tenant, field::CONTENT, c)),
        );
        self.sent_at.push(m.sent_at);
    }
}

/// The batch's audit rows, column by column.
#[derive(Default)]
struct AuditColumns {
    actor: Vec<String>,
    action: Vec<String>,
    subject: Vec<String>,
    correlation_id: Vec<String>,
    details: Vec<serde_json::Value>,
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
