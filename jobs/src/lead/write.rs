//! The one statement that writes lead versions: the leads (new ones inserted whole, others
//! updated), their `lead_scores` history rows, the CRM's wishes for qualified leads, and the
//! jobs' new messages and audit rows.
//!
//! Why one: the group commit ([`super::group`]) writes a batch of jobs with it, and a job alone
//! ([`super::store::apply_to`]) its one version (its message and audit rows it writes itself,
//! row by row, so it passes none). The lead's columns, its history row and the rule of the
//! CRM's wish are spelled here once for both, and both run the same statement, less the
//! inserts it has nothing for ([`Parts`]).
//!
//! Every lead goes through one `insert … on conflict (tenant_id, external_id) do update`: an
//! existing lead is found by a probe of its primary key, whatever the table's statistics say.
//! An `update … from` the batch left that to the planner, and the statement's reusable plan,
//! made while a tenant had a few leads, went on scanning all of them in every batch as the
//! tenant grew (a quarter of the statement's time at `--tenants 50`: docs/bench/plans.md). The
//! update applies only to the row the caller read and locked (`l.id = excluded.id`): a lead it
//! found missing but that exists now is not overwritten, and the write fails
//! ([`StoreError::Mismatch`]: the lead is not counted, and its history row names no lead).

use std::collections::HashMap;
use std::sync::OnceLock;

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::lead::store::{StoreError, Stored};
use crate::lead::Inbound;
use crate::pii::{field, Sealer};

/// What one statement writes, column by column (`unnest` reads the columns back as rows).
#[derive(Default)]
pub(super) struct Rows {
    versions: Versions,
    /// Qualified leads and the version the CRM should get.
    wishes: (Vec<Uuid>, Vec<i64>),
    messages: Messages,
    audit: Audit,
}

impl Rows {
    /// Adds `lead`'s new version (under its `external_id`, by the job `message_id`), its
    /// personal fields sealed for rest.
    pub(super) fn version(
        &mut self,
        sealer: &Sealer,
        tenant: Uuid,
        external_id: &str,
        message_id: &str,
        lead: &Stored,
    ) {
        self.versions
            .push(sealer, tenant, external_id, message_id, lead);
    }

    /// Asks for `version` of the qualified lead `lead_id` to reach the CRM, for a tenant read to
    /// have a CRM connection (the statement checks it again; a wish already higher stays).
    pub(super) fn wish(&mut self, lead_id: Uuid, version: i64) {
        self.wishes.0.push(lead_id);
        self.wishes.1.push(version);
    }

    /// Adds a job's new message for lead `lead_id`, its text sealed.
    pub(super) fn message(&mut self, sealer: &Sealer, tenant: Uuid, lead_id: Uuid, m: &Inbound) {
        self.messages.push(sealer, tenant, lead_id, m);
    }

    /// Adds an audit row (outcome `ok`).
    pub(super) fn audit(
        &mut self,
        actor: String,
        action: &str,
        subject: String,
        correlation_id: String,
        details: serde_json::Value,
    ) {
        let a = &mut self.audit;
        a.actor.push(actor);
        a.action.push(action.to_owned());
        a.subject.push(subject);
        a.correlation_id.push(correlation_id);
        a.details.push(details);
    }

    /// Nothing to write.
    pub(super) fn is_empty(&self) -> bool {
        self.versions.id.is_empty()
            && self.wishes.0.is_empty()
            && self.messages.lead_id.is_empty()
            && self.audit.actor.is_empty()
    }
}

/// The parts a statement leaves out when it has nothing for them: each is an `insert` that
/// costs its node's set-up and its table's statement trigger even when it inserts no row,
/// about a third of a one-lead write's own cost together (docs/bench/lead-path.md, "A write without the
/// inserts it has nothing for"). A `lead_score` job has no message, a job alone no audit row,
/// a tenant without a CRM connection no wish.
#[derive(Clone, Copy)]
struct Parts {
    wish: bool,
    audit: bool,
    messages: bool,
}

impl Parts {
    fn of(rows: &Rows) -> Self {
        Self {
            wish: !rows.wishes.0.is_empty(),
            audit: !rows.audit.actor.is_empty(),
            messages: !rows.messages.lead_id.is_empty(),
        }
    }

    /// The statement with these parts (see the module docs), formatted once per combination.
    fn sql(self) -> &'static str {
        static SQL: [OnceLock<String>; 8] = [const { OnceLock::new() }; 8];
        let i =
            usize::from(self.wish) | usize::from(self.audit) << 1 | usize::from(self.messages) << 2;
        SQL[i].get_or_init(|| self.format())
    }

    fn format(self) -> String {
        // The CRM's wish for each qualified lead's version: only while the tenant has a CRM
        // connection (checked again here, in the statement's snapshot), never lowering a wish
        // already recorded.
        let wish = if self.wish {
            ",
         wish as (
             insert into crm_sync_state (tenant_id, lead_id, wanted_version)
             select $1, w.id, w.version from unnest($19::uuid[], $20::int8[]) as w(id, version)
              where exists (select 1 from crm_connections where tenant_id = $1)
             on conflict (lead_id) do update
                set wanted_version = greatest(crm_sync_state.wanted_version,
                                              excluded.wanted_version),
                    updated_at = case when excluded.wanted_version > crm_sync_state.wanted_version
                                      then now() else crm_sync_state.updated_at end
             returning lead_id, wanted_version, synced_version)"
        } else {
            ""
        };
        let audited = if self.audit {
            ",
         audited as (
             insert into audit_log (tenant_id, actor, action, subject, outcome, correlation_id,
                                    details)
             select $1, a.actor, a.action, a.subject, 'ok', a.correlation_id, a.details
               from unnest($21::text[], $22::text[], $23::text[], $24::text[], $25::jsonb[])
                 as a(actor, action, subject, correlation_id, details))"
        } else {
            ""
        };
        let messages = if self.messages {
            ",
         messages as (
             insert into lead_messages (tenant_id, lead_id, source, source_id, conversation_id,
                                        content, sent_at)
             select $1, m.lead_id, m.source, m.source_id, m.conversation_id, m.content, m.sent_at
               from unnest($26::uuid[], $27::text[], $28::text[], $29::int8[], $30::text[],
                           $31::timestamptz[])
                 as m(lead_id, source, source_id, conversation_id, content, sent_at)
             on conflict (tenant_id, source, source_id) do nothing
             returning 1)"
        } else {
            ""
        };
        let counted = if self.messages {
            "(select count(*) from messages)"
        } else {
            "0::int8"
        };
        let (wished, joined) = if self.wish {
            (
                "w.lead_id, w.wanted_version, w.synced_version",
                "left join wish w on true",
            )
        } else {
            (
                "null::uuid as lead_id, null::int8 as wanted_version, null::int8 as synced_version",
                "",
            )
        };
        format!(
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
             select $1, id, version, score, tier, reasons, message_id from v){wish}{audited}{messages}
         select n.written, n.messages, {wished}
           from (select (select count(*) from written) as written, {counted} as messages) n
           {joined}"
        )
    }
}

/// Writes `rows` for `tenant` in one statement. Returns each wished lead's unsynced version
/// ([`unsynced`]). Fails with [`StoreError::Mismatch`] when fewer leads or messages were
/// written than given (the caller's transaction must then be rolled back).
pub(super) async fn write(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &Rows,
) -> Result<HashMap<Uuid, Option<i64>>, StoreError> {
    let (v, messages, audit) = (&rows.versions, &rows.messages, &rows.audit);
    let (changed, new) = (v.id.len(), messages.lead_id.len());
    let found = sqlx::query(Parts::of(rows).sql())
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
        .bind(&rows.wishes.0)
        .bind(&rows.wishes.1)
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
    for row in &found {
        let written: i64 = row.try_get("written")?;
        let stored: i64 = row.try_get("messages")?;
        if usize::try_from(stored).ok() != Some(new) {
            // A message the lead read found missing was stored meanwhile (under another lead:
            // never expected); counted in this lead's score, it would be wrong.
            return Err(StoreError::Mismatch(format!(
                "stored {stored} of {new} new messages"
            )));
        }
        if usize::try_from(written).ok() != Some(changed) {
            // A lead held for update vanished, or one read as missing was created meanwhile.
            return Err(StoreError::Mismatch(format!(
                "wrote {written} of {changed} lead versions"
            )));
        }
        let lead: Option<Uuid> = row.try_get("lead_id")?;
        if let Some(lead) = lead {
            let wanted: i64 = row.try_get("wanted_version")?;
            let synced: i64 = row.try_get("synced_version")?;
            wishes.insert(lead, unsynced(wanted, synced));
        }
    }
    Ok(wishes)
}

/// The version a `crm_sync` job should exist for: the wanted one, while it is not synced.
fn unsynced(wanted: i64, synced: i64) -> Option<i64> {
    (synced < wanted).then_some(wanted)
}

/// New lead versions, column by column.
#[derive(Default)]
struct Versions {
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

impl Versions {
    fn push(
        &mut self,
        sealer: &Sealer,
        tenant: Uuid,
        external_id: &str,
        message_id: &str,
        l: &Stored,
    ) {
        let c = sealer.seal_for_rest(
            tenant,
            l.name.as_deref(),
            l.username.as_deref(),
            l.phone.as_deref(),
            l.email.as_deref(),
        );
        self.id.push(l.id);
        self.external_id.push(external_id.to_owned());
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
        self.message_id.push(message_id.to_owned());
        self.phone_index.push(c.phone_index);
        self.email_index.push(c.email_index);
    }
}

/// New messages, column by column, their text sealed.
#[derive(Default)]
struct Messages {
    lead_id: Vec<Uuid>,
    source: Vec<&'static str>,
    source_id: Vec<String>,
    conversation_id: Vec<Option<i64>>,
    content: Vec<Option<String>>,
    sent_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Messages {
    fn push(&mut self, sealer: &Sealer, tenant: Uuid, lead_id: Uuid, m: &Inbound) {
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

/// Audit rows, column by column.
#[derive(Default)]
struct Audit {
    actor: Vec<String>,
    action: Vec<String>,
    subject: Vec<String>,
    correlation_id: Vec<String>,
    details: Vec<serde_json::Value>,
}
