//! The `chatwoot_event` job: open the sealed fields, validate the contact as a lead change,
//! store an incoming message or the conversation state, merge the contact through the lead
//! store, audit it, and ask for a CRM sync when the store says so.

use apalis_core::task::data::Data;
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use leadq_queue::backend::Job;
use leadq_queue::error::JobError;

use super::{Change, EventInput};
use crate::lead::{shadow, store, sync, LeadInput};
use crate::pii::field;
use crate::Deps;

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
        source: "chatwoot".into(),
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
    let mut tx = db::begin(&deps.pool, Scope::Tenant(meta.tenant_id)).await?;
    if meta.shadow {
        meta.auditor()
            .entry("chatwoot.event_shadow", &format!("job:{}", meta.job_id))
            .details(serde_json::json!({"event": ev.event}))
            .record(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(());
    }
    let Some(mut held) = store::ensure(&mut tx, meta, &lead.external_id, &lead.source).await?
    else {
        tracing::info!("Skipping an event for a lead erased after the event was received.");
        return Ok(());
    };
    let lead_id = held.id();
    // How long the contact waited for the agent's first reply, when this event is that reply.
    let mut waited = None;
    match &ev.change {
        Change::Message {
            message_id,
            conversation_id,
            content,
        } => {
            let message = store::Message {
                source: "chatwoot",
                source_id: &message_id.to_string(),
                conversation_id: *conversation_id,
                content: content.as_deref(),
                sent_at: ev.occurred_at,
            };
            store::add_message(&mut tx, &deps.sealer, meta.tenant_id, &mut held, &message).await?;
        }
        Change::Conversation {
            conversation_id,
            status,
        } => {
            store::set_conversation(
                &mut tx,
                meta.tenant_id,
                lead_id,
                *conversation_id,
                status,
                ev.occurred_at,
            )
            .await?;
        }
        Change::Reply {
            conversation_id, ..
        } => {
            waited = store::answer_messages(
                &mut tx,
                meta.tenant_id,
                lead_id,
                *conversation_id,
                ev.occurred_at,
            )
            .await?
            .map(|since| (ev.occurred_at - since).to_std().unwrap_or_default());
        }
        Change::Contact => {}
    }
    // Conversation events carry the contact too; its fields are merged like any change.
    let applied = store::apply_to(&mut tx, &deps.sealer, meta, &lead, held).await?;
    meta.auditor()
        .entry("chatwoot.event", &format!("lead:{lead_id}"))
        .details(serde_json::json!({
            "event": ev.event, "job_id": meta.job_id,
            "version": applied.version, "score": applied.score.score,
        }))
        .record(&mut *tx)
        .await?;
    if let (true, Some(candidate)) = (applied.changed, &applied.candidate) {
        let subject = format!("lead:{lead_id}");
        shadow::record(
            &mut tx,
            meta,
            crate::kinds::CHATWOOT_EVENT,
            &subject,
            Some(&applied.score),
            candidate,
        )
        .await?;
    }
    tx.commit().await?;
    if let Some(waited) = waited {
        metrics::histogram!(m::CHAT_FIRST_REPLY_SECONDS).record(waited.as_secs_f64());
    }
    if let Some(version) = applied.sync {
        sync::request(&deps.queue, meta, applied.lead_id, version).await?;
    }
    tracing::info!(event = %ev.event, version = applied.version, "Chatwoot event applied.");
    Ok(())
}
