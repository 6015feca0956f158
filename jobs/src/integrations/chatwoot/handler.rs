//! The `chatwoot_event` job: open the sealed fields, validate the contact as a lead change,
//! store an incoming message or the conversation state, merge the contact through the lead
//! store, audit it, and ask for a CRM sync when the store says so.
//!
//! An incoming message (most events) and a contact change go through the lead group commit
//! ([`crate::lead::group`]) with the tenant's other ready lead changes: one transaction for
//! many, the message written in the same statement as the lead's version. Conversation
//! states and agents' replies, which write rows of their own (the conversation's state, the
//! reply that ends a wait), take a transaction of their own here.

use apalis_core::task::data::Data;
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use leadq_queue::backend::Job;
use leadq_queue::envelope::JobMeta;
use leadq_queue::error::JobError;

use super::{Change, EventInput};
use crate::lead::handler::record_applied;
use crate::lead::store::Applied;
use crate::lead::{event_entry, store, sync, Attached, Event, Inbound, LeadInput};
use crate::pii::field;
use crate::Deps;

/// The integration's name on the messages it attaches (`lead_messages.source`).
const SOURCE: &str = "chatwoot";

/// The audit action of an applied event.
const AUDIT_ACTION: &str = "chatwoot.event";

/// The `chatwoot_event` handler.
pub async fn run(job: Job<EventInput>, deps: Data<Deps>) -> Result<(), JobError> {
    let meta = &job.meta;
    let mut ev = job.payload;
    let open =
        |field: &str, v: &mut Option<String>| deps.sealer.open_in_place(meta.tenant_id, field, v);
    open(field::EMAIL, &mut ev.contact.email)?;
    open(field::PHONE, &mut ev.contact.phone)?;
    if let Change::Message { content, .. } = &mut ev.change {
        open(field::CONTENT, content)?;
    }
    // The queue is not a trust boundary: the lead must be valid before it is stored. Contact
    // fields Chatwoot holds but that we cannot use (a malformed phone) are dropped, not fatal.
    let mut lead = LeadInput {
        external_id: ev.external_id.clone(),
        source: SOURCE.into(),
        name: ev.contact.name.clone(),
        username: None,
        phone: ev.contact.phone.clone(),
        email: ev.contact.email.clone(),
        answers: Default::default(),
        campaign: None,
        next_answer: None,
    };
    for e in lead.validate() {
        match e.field.as_str() {
            "name" => lead.name = None,
            "phone" => lead.phone = None,
            "email" => lead.email = None,
            _ => {
                return Err(JobError::permanent(
                    "invalid_payload",
                    anyhow::anyhow!("invalid field {} ({})", e.field, e.code),
                ))
            }
        }
    }
    if meta.shadow {
        let mut tx = db::begin(&deps.pool, Scope::Tenant(meta.tenant_id)).await?;
        meta.auditor()
            .entry("chatwoot.event_shadow", &format!("job:{}", meta.job_id))
            .details(serde_json::json!({"event": ev.event}))
            .record(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(());
    }
    // Messages and contact changes join the tenant's group commit; the rest run alone.
    let event = Event {
        kind: crate::kinds::CHATWOOT_EVENT,
        action: AUDIT_ACTION,
        event: ev.event.clone(),
    };
    let attached = match ev.change {
        Change::Message {
            message_id,
            conversation_id,
            content,
        } => Ok(Attached::Message(Inbound {
            event,
            source: SOURCE,
            source_id: message_id.to_string(),
            conversation_id,
            content,
            sent_at: ev.occurred_at,
        })),
        Change::Contact => Ok(Attached::Event(event)),
        Change::Conversation {
            conversation_id,
            status,
        } => Err(Alone::Conversation {
            conversation_id,
            status,
        }),
        Change::Reply {
            conversation_id, ..
        } => Err(Alone::Reply { conversation_id }),
    };
    let (applied, waited) = match attached {
        Ok(attached) => (deps.group.apply(meta.clone(), lead, attached).await?, None),
        Err(alone) => apply_alone(&deps, meta, &ev.event, ev.occurred_at, &alone, &lead).await?,
    };
    let Some(applied) = applied else {
        tracing::info!("Skipping an event for a lead erased after the event was received.");
        return Ok(());
    };
    if let Some(waited) = waited {
        metrics::histogram!(m::CHAT_FIRST_REPLY_SECONDS).record(waited.as_secs_f64());
    }
    if let Some(version) = applied.sync {
        sync::request(&deps.queue, meta, applied.lead_id, version).await?;
    }
    tracing::info!(event = %ev.event, version = applied.version, "Chatwoot event applied.");
    Ok(())
}

/// The changes that write rows of their own and so run alone ([`apply_alone`]).
enum Alone {
    /// The conversation's state.
    Conversation {
        conversation_id: i64,
        status: String,
    },
    /// An agent's reply: the end of the contact's wait.
    Reply { conversation_id: i64 },
}

/// A conversation state or an agent's reply, in a transaction of its own:
/// the lead held (created when new), the change stored, the contact merged, the event
/// audited. Returns what the store did (`None`: the lead was erased after the event was
/// received; nothing was written) and, for the agent's first reply, how long the contact
/// waited for it.
async fn apply_alone(
    deps: &Deps,
    meta: &JobMeta,
    event: &str,
    at: chrono::DateTime<chrono::Utc>,
    change: &Alone,
    lead: &LeadInput,
) -> Result<(Option<Applied>, Option<std::time::Duration>), JobError> {
    let mut tx = db::begin(&deps.pool, Scope::Tenant(meta.tenant_id)).await?;
    let Some(held) = store::ensure(&mut tx, meta, &lead.external_id, &lead.source).await? else {
        return Ok((None, None));
    };
    let lead_id = held.id();
    let mut waited = None;
    match change {
        Alone::Conversation {
            conversation_id,
            status,
        } => {
            store::set_conversation(
                &mut tx,
                meta.tenant_id,
                lead_id,
                *conversation_id,
                status,
                at,
            )
            .await?;
        }
        Alone::Reply { conversation_id } => {
            waited = store::answer_messages(&mut tx, meta.tenant_id, lead_id, *conversation_id, at)
                .await?
                .map(|since| (at - since).to_std().unwrap_or_default());
        }
    }
    // Conversation events carry the contact too; its fields are merged like any change.
    let applied = store::apply_to(&mut tx, &deps.sealer, meta, lead, held).await?;
    let entries = vec![event_entry(AUDIT_ACTION, event, meta, &applied)];
    record_applied(
        &mut tx,
        meta,
        crate::kinds::CHATWOOT_EVENT,
        entries,
        &applied,
    )
    .await?;
    tx.commit().await?;
    Ok((Some(applied), waited))
}
