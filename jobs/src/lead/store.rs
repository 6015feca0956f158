//! The lead store: how a change reaches a lead, gets scored, versioned and queued for the CRM.
//!
//! Every job that changes a lead (`lead_score` from the API or the Telegram bot,
//! `chatwoot_event` from Chatwoot) goes through [`apply`], inside the job's tenant-scoped
//! transaction, so the rules live in one place:
//!
//! 1. a lead erased after the job was made is never brought back (tombstone);
//! 2. the change is merged into the stored lead (answers by question, contact fields when
//!    given, the first campaign wins, a free-text answer fills the next open question);
//! 3. the merged lead is scored with the tenant's rules;
//! 4. if anything the CRM or the score depends on changed, the lead gets a new `version` and
//!    a `lead_scores` history row; replaying the same job changes nothing;
//! 5. a lead that is qualified (hot tier; it stays qualified once it was) and has a CRM
//!    connection gets a `crm_sync_state` row wanting this version; [`Applied::sync`] tells the
//!    caller to enqueue `crm_sync` for it after commit, with a message id per lead version, so
//!    each version is synced once.
//!
//! The contact fields are stored sealed with their blind index ([`crate::pii::at_rest`]): the
//! store opens them to merge a change and seals them again when it writes a new version.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::lead::scoring::{self, Facts, Rules, RulesRow, Score, RULES_COLUMNS, RULES_JOINS};
use crate::lead::{write, LeadInput};
use crate::pii::at_rest::{open_stored, Unreadable};
use crate::pii::{field, Sealer};
use leadq_queue::envelope::JobMeta;
use leadq_queue::JobError;

/// Why the store could not apply a change.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A stored personal field does not open (its key was dropped, or the row was altered).
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    /// The write found the leads other than their read: a lead held for update vanished, or
    /// one read as missing was created meanwhile by a writer that does not hold it. Never
    /// expected; the transaction must be rolled back, and a retry reads them again.
    #[error("lead write mismatch: {0}")]
    Mismatch(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db(e) => e.into(),
            // No retry opens it: dead-letter it, where an operator sees the code.
            StoreError::Unreadable(e) => JobError::permanent("sealed_data_unreadable", e),
            StoreError::Mismatch(_) => JobError::transient("lead_write_mismatch", e),
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The lead.
    pub lead_id: Uuid,
    /// Its version after the change.
    pub version: i64,
    /// Whether the change created a new version.
    pub changed: bool,
    /// The score of that version.
    pub score: Score,
    /// A CRM sync is wanted up to this version: enqueue `crm_sync` (see [`crate::integrations::hubspot`]).
    pub sync: Option<i64>,
    /// The score the tenant's candidate rules give the same version, when it has candidate
    /// rules (shadow comparison, [`crate::lead::shadow`]).
    pub candidate: Option<Score>,
}

/// Holds the lead `external_id` of `tenant` until the transaction ends: a job's write and an
/// erasure of the same lead take turns. Without it an erasure could commit between a
/// handler's tombstone check and its insert (the lead row does not exist yet, so there is no
/// row to lock), and the erased lead would come back. Per lead, so leads never wait on each
/// other (a hash collision only costs a short wait).
pub async fn hold_lead(
    conn: &mut PgConnection,
    tenant: Uuid,
    external_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtext($1::text), hashtext($2))")
        .bind(tenant)
        .bind(external_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The stored state of a lead that versions follow.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(super) struct Stored {
    pub(super) id: Uuid,
    pub(super) source: String,
    pub(super) name: Option<String>,
    pub(super) username: Option<String>,
    pub(super) phone: Option<String>,
    pub(super) email: Option<String>,
    pub(super) answers: sqlx::types::Json<BTreeMap<String, String>>,
    pub(super) campaign: Option<String>,
    pub(super) score: Option<i32>,
    pub(super) tier: Option<String>,
    pub(super) reasons: sqlx::types::Json<Vec<scoring::Reason>>,
    pub(super) version: i64,
    pub(super) qualified_at: Option<DateTime<Utc>>,
}

impl Stored {
    /// The row as read, with its personal fields opened.
    fn opened(mut self, sealer: &Sealer, tenant: Uuid) -> Result<Self, Unreadable> {
        self.name = open_stored(sealer, tenant, field::NAME, self.name)?;
        self.username = open_stored(sealer, tenant, field::USERNAME, self.username)?;
        self.phone = open_stored(sealer, tenant, field::PHONE, self.phone)?;
        self.email = open_stored(sealer, tenant, field::EMAIL, self.email)?;
        Ok(self)
    }
}

/// Merges `input` into `lead` (see the module docs).
fn merge(lead: &mut Stored, input: &LeadInput) {
    for (field, value) in [
        (&mut lead.name, &input.name),
        (&mut lead.username, &input.username),
        (&mut lead.phone, &input.phone),
        (&mut lead.email, &input.email),
    ] {
        if value.is_some() {
            field.clone_from(value);
        }
    }
    for (k, v) in &input.answers {
        lead.answers.0.insert(k.clone(), v.clone());
    }
    if let Some(text) = &input.next_answer {
        let open = scoring::QUESTIONNAIRE
            .iter()
            .find(|q| !lead.answers.0.contains_key(**q))
            .copied()
            .unwrap_or("notes");
        lead.answers.0.insert(open.to_owned(), text.clone());
    }
    if lead.campaign.is_none() {
        lead.campaign.clone_from(&input.campaign);
    }
}

/// The columns of [`Stored`], for the statements that read or return a lead.
pub(super) const STORED: &str =
    "id, source, name, username, phone, email, answers, campaign, score, tier, \
                      reasons, version, qualified_at";

/// A lead held for the caller's transaction: its row as read after [`hold_lead`], locked
/// `for update`, with what scoring it needs (the tenant's rules, the messages it received).
/// [`ensure`] and [`apply`] read it in one statement; [`apply_to`] changes it. What a handler
/// does in between changes none of the columns it holds but the message count, which
/// [`add_message`] keeps up to date.
#[derive(Debug)]
pub struct Held {
    stored: Stored,
    /// Not in the table yet ([`apply`] of a new lead): [`apply_to`] inserts it with its first
    /// version, in one statement instead of an insert and an update.
    new: bool,
    /// The tenant has a CRM connection, as read with the lead: a qualified lead's version is
    /// then wished for ([`write::Rows::wish`]).
    crm: bool,
    inbound: i64,
    rules: Rules,
    candidate: Option<Rules>,
}

impl Held {
    /// The lead's id.
    pub fn id(&self) -> Uuid {
        self.stored.id
    }
}

/// A lead's row (if it exists) with the time its `external_id` was last erased, if ever, the
/// messages it received and the tenant's scoring rules.
pub(super) struct Found {
    pub(super) stored: Option<Stored>,
    erased_at: Option<DateTime<Utc>>,
    inbound: i64,
    /// The message the job attaches is stored already ([`read_held`]'s `messages`).
    message_stored: bool,
    /// The tenant has a CRM connection (its qualified leads' versions are wished for).
    crm: bool,
    rules: RulesRow,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Found {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let exists = row.try_get::<Option<Uuid>, _>("id")?.is_some();
        Ok(Self {
            stored: exists.then(|| Stored::from_row(row)).transpose()?,
            erased_at: row.try_get("erased_at")?,
            inbound: row.try_get("inbound")?,
            message_stored: row.try_get("message_stored")?,
            crm: row.try_get("crm")?,
            rules: RulesRow::from_row(row)?,
        })
    }
}

impl Found {
    /// Whether the lead was erased after `meta`'s job was made: such a job writes nothing.
    pub(super) fn erased_for(&self, meta: &JobMeta) -> bool {
        self.erased_at.is_some_and(|at| meta.timestamp <= at)
    }

    /// The job attaches an incoming message: counts it towards the lead's messages when it is
    /// not stored yet, and says whether it is to be written. What [`add_message`] does for a
    /// held lead, for a group commit that writes the message with the lead's version.
    pub(super) fn count_message(&mut self) -> bool {
        if self.message_stored {
            return false;
        }
        self.inbound += 1;
        true
    }

    pub(super) fn held(self, stored: Stored, new: bool) -> Held {
        let (rules, candidate) = self.rules.rules();
        Held {
            stored,
            new,
            crm: self.crm,
            inbound: self.inbound,
            rules,
            candidate,
        }
    }
}

/// Holds the lead ([`hold_lead`]) and reads it ([`read_held`]). The read is a statement of its
/// own, after the lock, so it sees what committed while the lock was awaited: the lead another
/// job created or changed, an erasure. (Merging the two into one round trip, a PL/pgSQL
/// function that locks then reads, was measured and saved no CPU: docs/bench/lead-path.md.)
async fn hold_and_find(
    conn: &mut PgConnection,
    tenant: Uuid,
    external_id: &str,
) -> Result<Found, sqlx::Error> {
    hold_lead(&mut *conn, tenant, external_id).await?;
    let mut found = read_held(conn, tenant, &[external_id], &[]).await?;
    found.pop().ok_or(sqlx::Error::RowNotFound)
}

/// The leads `ids` (distinct) of `tenant`, held by the caller, each locked `for update` with its
/// last erasure, its message count and the tenant's rules, in `ids`' order; a row of nulls for
/// a lead that does not exist. One statement for one lead ([`hold_and_find`]) or a group
/// commit's many ([`crate::lead::group`]). `messages`, by position (shorter than `ids`: none
/// for the rest), are the `(source, source_id)` of the incoming message each job attaches:
/// whether it is stored already comes with the lead ([`Found::count_message`]).
///
/// The ids are unnested from `(select $2)`, not from `$2`: PostgreSQL sizes `unnest` of a
/// bound array by its length (one or two leads) and of anything else at ten rows, so with `$2`
/// every run's own plan looked cheaper than the reusable one and the statement was planned on
/// every call (under row-level security, 0.45 ms of planning for a 0.08 ms read: a tenth of the
/// server's CPU at `--tenants 50`). The reusable plan is the same index walk.
///
/// The messages are looked up so that only one plan is possible, as the reusable plan is made
/// once, while a tenant may have had a few messages, and kept as it grows. A lead's count names
/// only the lead (`lead_messages_by_lead`; row-level security keeps it to the tenant): with the
/// tenant's id as well it was planned as a bitmap of every message of the tenant, for each
/// lead. Whether a job's message is stored is a lateral probe of the primary key with a
/// `limit`: as an `exists`, it was planned as a hash of every message of the tenant, built for
/// each batch (36 ms a read with 80,000 messages; docs/bench/plans.md).
pub(super) async fn read_held(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[&str],
    messages: &[Option<(&str, &str)>],
) -> Result<Vec<Found>, sqlx::Error> {
    use sqlx::FromRow;
    let sources: Vec<Option<&str>> = messages.iter().map(|m| m.map(|m| m.0)).collect();
    let source_ids: Vec<Option<&str>> = messages.iter().map(|m| m.map(|m| m.1)).collect();
    let rows = sqlx::query(&format!(
        "select l.*,
                (select erased_at from erasures e
                  where e.tenant_id = t.tenant_id and e.external_id = u.external_id) as erased_at,
                (select count(*) from lead_messages m where m.lead_id = l.id) as inbound,
                s.stored is not null as message_stored,
                exists (select from crm_connections k where k.tenant_id = $1) as crm,
                {RULES_COLUMNS}
           from (select $1::uuid as tenant_id) t
          cross join unnest((select $2::text[]), (select $3::text[]), (select $4::text[]))
                with ordinality as u(external_id, source, source_id, i)
           left join lateral (select {STORED} from leads
                               where tenant_id = t.tenant_id and external_id = u.external_id
                                 for update) l on true
           left join lateral (select true as stored from lead_messages m
                               where m.tenant_id = t.tenant_id and m.source = u.source
                                 and m.source_id = u.source_id
                               limit 1) s on true
           {RULES_JOINS}
          order by u.i"
    ))
    .bind(tenant)
    .bind(ids)
    .bind(&sources)
    .bind(&source_ids)
    .fetch_all(conn)
    .await?;
    rows.iter().map(Found::from_row).collect()
}

/// A lead not stored yet: version 0, unscored.
pub(super) fn blank(id: Uuid, source: &str) -> Stored {
    Stored {
        id,
        source: source.to_owned(),
        name: None,
        username: None,
        phone: None,
        email: None,
        answers: sqlx::types::Json(BTreeMap::new()),
        campaign: None,
        score: None,
        tier: None,
        reasons: sqlx::types::Json(Vec::new()),
        version: 0,
        qualified_at: None,
    }
}

/// Holds the lead ([`hold_lead`]) and returns it, created (version 0, unscored) when it does
/// not exist yet, so that what the handler attaches to it (a message) can name it; `None` when
/// it was erased after `meta`'s job was made. Two statements for a lead that exists
/// ([`hold_and_find`]); a third, the insert, for a new one.
pub async fn ensure(
    conn: &mut PgConnection,
    meta: &JobMeta,
    external_id: &str,
    source: &str,
) -> Result<Option<Held>, sqlx::Error> {
    let tenant = meta.tenant_id;
    let mut found = hold_and_find(&mut *conn, tenant, external_id).await?;
    if found.erased_for(meta) {
        return Ok(None);
    }
    if let Some(stored) = found.stored.take() {
        return Ok(Some(found.held(stored, false)));
    }
    let created: Option<Stored> = sqlx::query_as(&format!(
        "insert into leads (tenant_id, external_id, source) values ($1, $2, $3)
         on conflict (tenant_id, external_id) do nothing
         returning {STORED}"
    ))
    .bind(tenant)
    .bind(external_id)
    .bind(source)
    .fetch_optional(&mut *conn)
    .await?;
    match created {
        Some(stored) => Ok(Some(found.held(stored, false))),
        // Created meanwhile by a writer that does not hold the lead; read it again.
        None => {
            let mut again = hold_and_find(conn, tenant, external_id).await?;
            let stored = again.stored.take().filter(|_| !again.erased_for(meta));
            Ok(stored.map(|stored| again.held(stored, false)))
        }
    }
}

/// Applies `input` to its lead for `meta`'s tenant (see the module docs). `None`: the lead
/// was erased after the job was made; nothing was written. Besides the audit row the caller
/// writes, three statements: the lock and the read ([`hold_and_find`]), and the new version
/// with its history row and CRM wish (the statement a group commit writes a batch with:
/// [`write`]).
pub async fn apply(
    conn: &mut PgConnection,
    sealer: &Sealer,
    meta: &JobMeta,
    input: &LeadInput,
) -> Result<Option<Applied>, StoreError> {
    let tenant = meta.tenant_id;
    let mut found = hold_and_find(&mut *conn, tenant, &input.external_id).await?;
    if found.erased_for(meta) {
        return Ok(None);
    }
    let held = match found.stored.take() {
        Some(stored) => found.held(stored, false),
        None => found.held(blank(Uuid::new_v4(), &input.source), true),
    };
    apply_to(conn, sealer, meta, input, held).await.map(Some)
}

/// A message of the lead's conversation, as an integration received it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The integration it came from (`chatwoot`).
    pub source: &'a str,
    /// Its id there; a message is stored once per `(tenant, source, source_id)`.
    pub source_id: &'a str,
    /// The conversation it belongs to, when the integration says.
    pub conversation_id: Option<i64>,
    /// Its text, if any.
    pub content: Option<&'a str>,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

/// Attaches an incoming message to the held lead (it counts towards the lead's score), its
/// text sealed; a message already stored is left as it is.
pub async fn add_message(
    conn: &mut PgConnection,
    sealer: &Sealer,
    tenant: Uuid,
    held: &mut Held,
    m: &Message<'_>,
) -> Result<(), sqlx::Error> {
    let added = sqlx::query(
        "insert into lead_messages
             (tenant_id, lead_id, source, source_id, conversation_id, content, sent_at)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (tenant_id, source, source_id) do nothing",
    )
    .bind(tenant)
    .bind(held.id())
    .bind(m.source)
    .bind(m.source_id)
    .bind(m.conversation_id)
    .bind(m.content.map(|c| sealer.seal(tenant, field::CONTENT, c)))
    .bind(m.sent_at)
    .execute(conn)
    .await?;
    held.inbound += i64::try_from(added.rows_affected()).unwrap_or(0);
    Ok(())
}

/// An agent replied at `at` in `conversation_id`: marks the lead's unanswered messages of that
/// conversation sent until then as answered, and returns when the earliest of them was sent
/// (the start of the wait this reply ends). `None` when nothing was waiting: a second reply,
/// or a replayed one.
pub async fn answer_messages(
    conn: &mut PgConnection,
    tenant: Uuid,
    lead_id: Uuid,
    conversation_id: i64,
    at: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "with answered as (
             update lead_messages set replied_at = $4
              where tenant_id = $1 and lead_id = $2 and conversation_id = $3
                and replied_at is null and sent_at <= $4
          returning sent_at)
         select min(sent_at) from answered",
    )
    .bind(tenant)
    .bind(lead_id)
    .bind(conversation_id)
    .bind(at)
    .fetch_one(conn)
    .await
}

/// Sets the lead's conversation state (Chatwoot's conversation id and status as of `at`).
/// Deliveries can arrive out of order: an older state never replaces a newer one.
pub async fn set_conversation(
    conn: &mut PgConnection,
    tenant: Uuid,
    lead_id: Uuid,
    conversation_id: i64,
    status: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update leads set conversation_id = $3, conversation_status = $4,
                conversation_at = $5, updated_at = now()
          where tenant_id = $1 and id = $2
            and (conversation_at is null or conversation_at <= $5)",
    )
    .bind(tenant)
    .bind(lead_id)
    .bind(conversation_id)
    .bind(status)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`apply`] for a lead the caller has [`ensure`]d in this transaction.
pub async fn apply_to(
    conn: &mut PgConnection,
    sealer: &Sealer,
    meta: &JobMeta,
    input: &LeadInput,
    held: Held,
) -> Result<Applied, StoreError> {
    let p = plan(sealer, meta, input, held)?;
    let tenant = meta.tenant_id;
    let mut rows = write::Rows::default();
    if p.changed {
        let (external_id, message_id) = (&input.external_id, &meta.message_id);
        rows.version(sealer, tenant, external_id, message_id, &p.lead);
    }
    if p.wished() {
        rows.wish(p.lead.id, p.lead.version);
    }
    let sync = if rows.is_empty() {
        None
    } else {
        let wishes = write::write(conn, tenant, &rows).await?;
        wishes.get(&p.lead.id).copied().flatten()
    };
    Ok(p.applied(sync))
}

/// A change merged and scored in memory: what [`apply_to`] (or a group commit,
/// [`crate::lead::group`]) writes.
pub(super) struct Planned {
    /// The lead after the change, in clear; its next version when `changed`.
    pub(super) lead: Stored,
    pub(super) changed: bool,
    pub(super) score: Score,
    pub(super) candidate: Option<Score>,
    /// The tenant has a CRM connection ([`Held`]).
    crm: bool,
}

impl Planned {
    /// The CRM should get the lead's version: it is qualified and the tenant has a CRM
    /// connection (the write checks the connection again, in its own snapshot).
    pub(super) fn wished(&self) -> bool {
        self.crm && self.lead.qualified_at.is_some()
    }

    /// What the change did, before it is written (no CRM wish known yet).
    pub(super) fn view(&self) -> Applied {
        Applied {
            lead_id: self.lead.id,
            version: self.lead.version,
            changed: self.changed,
            score: self.score.clone(),
            sync: None,
            candidate: self.candidate.clone(),
        }
    }

    pub(super) fn applied(self, sync: Option<i64>) -> Applied {
        Applied {
            lead_id: self.lead.id,
            version: self.lead.version,
            changed: self.changed,
            score: self.score,
            sync,
            candidate: self.candidate,
        }
    }
}

/// Merges `input` into the held lead and scores it (the module docs' steps 2-4), without I/O.
pub(super) fn plan(
    sealer: &Sealer,
    meta: &JobMeta,
    input: &LeadInput,
    held: Held,
) -> Result<Planned, Unreadable> {
    let stored = held.stored.opened(sealer, meta.tenant_id)?;
    let mut lead = stored.clone();
    merge(&mut lead, input);
    let facts = Facts {
        answers: &lead.answers.0,
        reachable: lead.email.is_some() || lead.phone.is_some(),
        inbound_messages: held.inbound,
    };
    let score = scoring::score(facts, &held.rules);
    let candidate = held.candidate.map(|c| scoring::score(facts, &c));
    lead.score = Some(i32::from(score.score));
    lead.tier = Some(score.tier.as_str().to_owned());
    lead.reasons = sqlx::types::Json(score.reasons.clone());
    // A new lead is always a change: it had no score.
    let changed = held.new || lead != stored;
    if changed {
        lead.version = stored.version + 1;
        if score.tier == scoring::Tier::Hot && lead.qualified_at.is_none() {
            lead.qualified_at = Some(Utc::now());
        }
    }
    Ok(Planned {
        lead,
        changed,
        score,
        candidate,
        crm: held.crm,
    })
}

/// Scores what `input` would make of its lead without writing anything (shadow mode).
pub async fn preview(
    conn: &mut PgConnection,
    sealer: &Sealer,
    tenant: Uuid,
    input: &LeadInput,
) -> Result<Score, StoreError> {
    let stored: Option<Stored> = sqlx::query_as(&format!(
        "select {STORED} from leads where tenant_id = $1 and external_id = $2"
    ))
    .bind(tenant)
    .bind(&input.external_id)
    .fetch_optional(&mut *conn)
    .await?;
    let stored = stored.map(|s| s.opened(sealer, tenant)).transpose()?;
    let mut lead = stored.unwrap_or_else(|| blank(Uuid::nil(), &input.source));
    merge(&mut lead, input);
    Ok(score_of(conn, tenant, &lead).await?.0)
}

/// The score of `lead` as it stands, with its chat messages and the tenant's rules; and with
/// its candidate rules, when it has any. One statement ([`Rules::load_for_lead`]).
async fn score_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    lead: &Stored,
) -> Result<(Score, Option<Score>), sqlx::Error> {
    // A lead not stored yet (a preview of a new one) has the nil id, and no messages.
    let id = (!lead.id.is_nil()).then_some(lead.id);
    let (rules, candidate, inbound) = Rules::load_for_lead(conn, tenant, id).await?;
    let facts = Facts {
        answers: &lead.answers.0,
        reachable: lead.email.is_some() || lead.phone.is_some(),
        inbound_messages: inbound,
    };
    Ok((
        scoring::score(facts, &rules),
        candidate.map(|c| scoring::score(facts, &c)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        Stored {
            id: Uuid::nil(),
            source: "telegram".into(),
            name: Some("Ada".into()),
            username: None,
            phone: None,
            email: None,
            answers: sqlx::types::Json(BTreeMap::from([("budget".into(), "50k+".into())])),
            campaign: Some("spring".into()),
            score: None,
            tier: None,
            reasons: sqlx::types::Json(vec![]),
            version: 3,
            qualified_at: None,
        }
    }

    fn input() -> LeadInput {
        LeadInput {
            external_id: "tg-1".into(),
            source: "telegram".into(),
            name: None,
            username: None,
            phone: None,
            email: None,
            answers: BTreeMap::new(),
            campaign: None,
            next_answer: None,
        }
    }

    #[test]
    fn a_free_text_answer_fills_the_next_open_question() {
        let mut l = stored();
        merge(
            &mut l,
            &LeadInput {
                next_answer: Some("this month".into()),
                ..input()
            },
        );
        assert_eq!(l.answers.0["timeline"], "this month");
        let mut full = stored();
        for q in scoring::QUESTIONNAIRE {
            full.answers.0.insert((*q).into(), "x".into());
        }
        merge(
            &mut full,
            &LeadInput {
                next_answer: Some("call me".into()),
                ..input()
            },
        );
        assert_eq!(full.answers.0["notes"], "call me");
    }

    #[test]
    fn given_fields_replace_missing_ones_keep_and_the_first_campaign_wins() {
        let mut l = stored();
        merge(
            &mut l,
            &LeadInput {
                email: Some("ada@example.com".into()),
                campaign: Some("autumn".into()),
                ..input()
            },
        );
        assert_eq!(l.name.as_deref(), Some("Ada"));
        assert_eq!(l.email.as_deref(), Some("ada@example.com"));
        assert_eq!(l.campaign.as_deref(), Some("spring"));
        // An empty change is no change.
        let mut same = stored();
        merge(&mut same, &input());
        assert_eq!(same, stored());
    }
}
