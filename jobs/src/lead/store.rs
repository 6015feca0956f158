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

use crate::lead::scoring::{self, Facts, Rules, Score};
use crate::lead::LeadInput;
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
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db(e) => e.into(),
            // No retry opens it: dead-letter it, where an operator sees the code.
            StoreError::Unreadable(e) => JobError::permanent("sealed_data_unreadable", e),
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
struct Stored {
    id: Uuid,
    source: String,
    name: Option<String>,
    username: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    answers: sqlx::types::Json<BTreeMap<String, String>>,
    campaign: Option<String>,
    score: Option<i32>,
    tier: Option<String>,
    reasons: sqlx::types::Json<Vec<scoring::Reason>>,
    version: i64,
    qualified_at: Option<DateTime<Utc>>,
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
const STORED: &str = "id, source, name, username, phone, email, answers, campaign, score, tier, \
                      reasons, version, qualified_at";

/// A lead held for the caller's transaction: its row as read after [`hold_lead`], locked
/// `for update`. [`ensure`] returns it and [`apply_to`] changes it; what a handler does in
/// between (a message, the conversation's state) changes none of the columns it holds.
#[derive(Debug)]
pub struct Held {
    stored: Stored,
}

impl Held {
    /// The lead's id.
    pub fn id(&self) -> Uuid {
        self.stored.id
    }
}

/// A lead's row with the time its `external_id` was last erased, if ever.
#[derive(sqlx::FromRow)]
struct Found {
    #[sqlx(flatten)]
    stored: Stored,
    erased_at: Option<DateTime<Utc>>,
}

/// Reads and locks the lead, with its last erasure, in one statement.
async fn find(
    conn: &mut PgConnection,
    tenant: Uuid,
    external_id: &str,
) -> Result<Option<Found>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {STORED},
                (select erased_at from erasures e
                  where e.tenant_id = l.tenant_id and e.external_id = l.external_id) as erased_at
           from leads l where tenant_id = $1 and external_id = $2 for update"
    ))
    .bind(tenant)
    .bind(external_id)
    .fetch_optional(conn)
    .await
}

/// Holds the lead ([`hold_lead`]) and returns it, created (version 0, unscored) when it does
/// not exist yet; `None` when it was erased after `meta`'s job was made. Three statements for
/// a new lead, two for one that exists: the lock, then the lead with its erasure (a new
/// statement, so it sees what committed while the lock was awaited), then the insert.
pub async fn ensure(
    conn: &mut PgConnection,
    meta: &JobMeta,
    external_id: &str,
    source: &str,
) -> Result<Option<Held>, sqlx::Error> {
    let tenant = meta.tenant_id;
    hold_lead(&mut *conn, tenant, external_id).await?;
    let live = |found: Found| {
        let erased = found.erased_at.is_some_and(|at| meta.timestamp <= at);
        (!erased).then_some(Held {
            stored: found.stored,
        })
    };
    if let Some(found) = find(&mut *conn, tenant, external_id).await? {
        return Ok(live(found));
    }
    // An erasure deletes the row, so a missing lead may be an erased one: the insert checks.
    let created: Option<Stored> = sqlx::query_as(&format!(
        "insert into leads (tenant_id, external_id, source)
         select $1, $2, $3
          where not exists (select 1 from erasures
                             where tenant_id = $1 and external_id = $2 and erased_at >= $4)
         on conflict (tenant_id, external_id) do nothing
         returning {STORED}"
    ))
    .bind(tenant)
    .bind(external_id)
    .bind(source)
    .bind(meta.timestamp)
    .fetch_optional(&mut *conn)
    .await?;
    match created {
        Some(stored) => Ok(Some(Held { stored })),
        // Erased after the job was made, or created meanwhile by a writer that does not hold
        // the lead; a new statement tells which.
        None => Ok(find(conn, tenant, external_id).await?.and_then(live)),
    }
}

/// Applies `input` to its lead for `meta`'s tenant (see the module docs). `None`: the lead
/// was erased after the job was made; nothing was written.
pub async fn apply(
    conn: &mut PgConnection,
    sealer: &Sealer,
    meta: &JobMeta,
    input: &LeadInput,
) -> Result<Option<Applied>, StoreError> {
    let Some(held) = ensure(conn, meta, &input.external_id, &input.source).await? else {
        return Ok(None);
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

/// Attaches an incoming message to the lead (it counts towards the lead's score), its text
/// sealed; a message already stored is left as it is.
pub async fn add_message(
    conn: &mut PgConnection,
    sealer: &Sealer,
    tenant: Uuid,
    lead_id: Uuid,
    m: &Message<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into lead_messages
             (tenant_id, lead_id, source, source_id, conversation_id, content, sent_at)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (tenant_id, source, source_id) do nothing",
    )
    .bind(tenant)
    .bind(lead_id)
    .bind(m.source)
    .bind(m.source_id)
    .bind(m.conversation_id)
    .bind(m.content.map(|c| sealer.seal(tenant, field::CONTENT, c)))
    .bind(m.sent_at)
    .execute(conn)
    .await?;
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
    let tenant = meta.tenant_id;
    let stored = held.stored;
    let stored = stored.opened(sealer, tenant)?;
    let mut lead = stored.clone();
    merge(&mut lead, input);
    let (s, candidate) = score_of(conn, tenant, &lead).await?;
    lead.score = Some(i32::from(s.score));
    lead.tier = Some(s.tier.as_str().to_owned());
    lead.reasons = sqlx::types::Json(s.reasons.clone());
    let changed = lead != stored;
    if changed {
        lead.version = stored.version + 1;
        if s.tier == scoring::Tier::Hot && lead.qualified_at.is_none() {
            lead.qualified_at = Some(Utc::now());
        }
        let c = sealer.seal_for_rest(
            tenant,
            lead.name.as_deref(),
            lead.username.as_deref(),
            lead.phone.as_deref(),
            lead.email.as_deref(),
        );
        // The new version and its history row, in one statement.
        sqlx::query(
            "with changed as (
                 update leads set name = $3, username = $4, phone = $5, email = $6, answers = $7,
                        campaign = $8, score = $9, tier = $10, reasons = $11, version = $12,
                        qualified_at = $13, scored_at = now(), last_message_id = $14,
                        updated_at = now(), phone_index = $15, email_index = $16
                  where tenant_id = $1 and id = $2
                 returning tenant_id, id)
             insert into lead_scores (tenant_id, lead_id, version, score, tier, reasons, message_id)
             select tenant_id, id, $12, $9, $10, $11, $14 from changed",
        )
        .bind(tenant)
        .bind(lead.id)
        .bind(&c.name)
        .bind(&c.username)
        .bind(&c.phone)
        .bind(&c.email)
        .bind(&lead.answers)
        .bind(&lead.campaign)
        .bind(lead.score)
        .bind(&lead.tier)
        .bind(&lead.reasons)
        .bind(lead.version)
        .bind(lead.qualified_at)
        .bind(&meta.message_id)
        .bind(&c.phone_index)
        .bind(&c.email_index)
        .execute(&mut *conn)
        .await?;
    }
    let sync = if lead.qualified_at.is_some() {
        want_sync(conn, tenant, lead.id, lead.version).await?
    } else {
        None
    };
    Ok(Applied {
        lead_id: lead.id,
        version: lead.version,
        changed,
        score: s,
        sync,
        candidate,
    })
}

/// Records that the CRM should get `version` of the lead (when the tenant has a CRM), and
/// returns the version a `crm_sync` job should exist for, if one is still unsynced. Called
/// again on a replay, it returns the same version, so a job lost between commit and enqueue
/// is enqueued by the replay.
async fn want_sync(
    conn: &mut PgConnection,
    tenant: Uuid,
    lead_id: Uuid,
    version: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let wanted: Option<(i64, i64)> = sqlx::query_as(
        "insert into crm_sync_state (tenant_id, lead_id, wanted_version)
         select $1, $2, $3 where exists (select 1 from crm_connections where tenant_id = $1)
         on conflict (lead_id) do update
            set wanted_version = greatest(crm_sync_state.wanted_version, excluded.wanted_version),
                updated_at = case when excluded.wanted_version > crm_sync_state.wanted_version
                                  then now() else crm_sync_state.updated_at end
         returning wanted_version, synced_version",
    )
    .bind(tenant)
    .bind(lead_id)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    Ok(wanted.and_then(|(w, s)| (s < w).then_some(w)))
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
    let mut lead = stored.unwrap_or(Stored {
        id: Uuid::nil(),
        source: input.source.clone(),
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
    });
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
