//! The right to be forgotten: a lead erased from PostgreSQL and from every queued or
//! dead-lettered job that names it, with a tombstone so no older job brings it back, and from
//! the tenant's CRM when it was synced there (a `crm_erase` job: the GDPR delete, with its
//! retries and its own audit); audited without personal data, with what was erased where.

use crate::pii::at_rest::seal_stored;
use crate::pii::field::EMAIL;
use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use serde::Serialize;
use sqlx::PgPool;

/// What an erasure removed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Erased {
    /// The lead existed in PostgreSQL and was deleted.
    pub lead_deleted: bool,
    /// Queued or dead-lettered jobs carrying the lead's data that were removed from Redis.
    pub jobs_removed: u64,
    /// Jobs running right now; their handler sees the tombstone and writes nothing.
    pub jobs_running: u64,
    /// The tenant's CRM.
    pub crm: CrmErasure,
}

/// What happens to the lead's copy in the tenant's CRM.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CrmErasure {
    /// `requested`: a `crm_erase` job asks the CRM to delete the contact (GDPR delete by the
    /// CRM's id, or by e-mail while a sync was wanted but recorded no id; retried until it
    /// answers; each answer audited as `crm.erase`); `not_synced`: no sync of this lead was
    /// ever wanted, so the CRM never received it.
    pub status: &'static str,
    /// The `crm_erase` job, when requested.
    pub job_id: Option<uuid::Uuid>,
}

impl Erased {
    /// Whether there was anything to erase.
    pub fn found_anything(&self) -> bool {
        self.lead_deleted || self.jobs_removed > 0 || self.jobs_running > 0
    }
}

/// Errors of an erasure.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The database failed (nothing was erased from Redis).
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Redis failed after the database erasure committed; run the erasure again.
    #[error("queue error")]
    Queue(#[from] leadq_queue::QueueError),
}

/// How the CRM knows an erased lead's contact, and whether a sync of it is in flight.
#[derive(sqlx::FromRow)]
struct InCrm {
    /// The CRM's id of the contact, once a sync recorded one.
    crm_id: Option<String>,
    /// The lead's e-mail (sealed, or clear before its conversion).
    email: Option<String>,
    /// The tenant's own id property, when it keys contacts by one.
    id_property: Option<String>,
    /// How long a live `crm_sync` claim of the lead has left (negative or null: none).
    claim_left_secs: Option<f64>,
}

/// How long after a live `crm_sync` claim ends the CRM is asked to delete the contact again.
const AFTER_CLAIM: std::time::Duration = std::time::Duration::from_secs(5);

/// Right to be forgotten: deletes the lead `external_id` of `tenant` from PostgreSQL, leaves a
/// tombstone (so no job made before now can recreate it), removes its pending and
/// dead-lettered jobs from Redis, and audits a pseudonymous record (the lead's uuid, no PII).
/// Idempotent: running it again is safe and finishes an interrupted erasure.
#[allow(clippy::too_many_arguments)]
pub async fn erase(
    pool: &PgPool,
    queue: &leadq_queue::Queue,
    sealer: &crate::pii::Sealer,
    tenant: uuid::Uuid,
    external_id: &str,
    actor: &str,
    correlation_id: &str,
) -> Result<Erased, EraseError> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    // Waits for a job writing this lead right now to commit, so its row is deleted below.
    crate::lead::store::hold_lead(&mut tx, tenant, external_id).await?;
    sqlx::query(
        "insert into erasures (tenant_id, external_id) values ($1, $2)
         on conflict (tenant_id, external_id) do update set erased_at = now()",
    )
    .bind(tenant)
    .bind(external_id)
    .execute(&mut *tx)
    .await?;
    // How the CRM knows the contact, read before the lead (and its sync state) is deleted:
    // by its own id once a sync recorded one; by e-mail while a sync was wanted but none
    // recorded an id (one may be in flight right now, or failed after HubSpot kept the
    // record).
    // A tenant keyed by a property of its own names the contact by the lead's external id
    // (what the sync sends as that property).
    // Locked, and with how long a live `crm_sync` claim of the lead has left: a batch sending
    // it to the CRM right now (its claim taken before this lock) may land its upsert after
    // this erasure's delete.
    let in_crm: Option<InCrm> = sqlx::query_as(
        "select s.crm_id, l.email,
                (select c.id_property from crm_connections c
                  where c.tenant_id = $1 and c.id_property <> 'email') as id_property,
                extract(epoch from s.claim_until - now())::float8 as claim_left_secs
           from crm_sync_state s join leads l on l.id = s.lead_id
          where l.tenant_id = $1 and l.external_id = $2
            for update of s",
    )
    .bind(tenant)
    .bind(external_id)
    .fetch_optional(&mut *tx)
    .await?;
    let in_flight = in_crm
        .as_ref()
        .and_then(|c| c.claim_left_secs)
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map(|secs| std::time::Duration::from_secs_f64(secs.min(3600.0)));
    let lead_id: Option<uuid::Uuid> = sqlx::query_scalar(
        "delete from leads where tenant_id = $1 and external_id = $2 returning id",
    )
    .bind(tenant)
    .bind(external_id)
    .fetch_optional(&mut *tx)
    .await?;
    // How an upsert in flight names the contact — by the tenant's property, or by e-mail —
    // for the delete after its claim: by then the contact may be a new one (an upsert that
    // lands after a delete by id creates one under a new id), which only this name finds.
    let as_upserted = in_flight.and_then(|_| {
        let c = in_crm.as_ref()?;
        match (&c.id_property, &c.email) {
            (Some(property), _) => Some((None, Some((property.clone(), external_id.to_owned())))),
            (None, Some(email)) => Some((Some(seal_stored(sealer, tenant, EMAIL, email)), None)),
            (None, None) => None,
        }
    });
    let target = match in_crm.map(|c| (c.crm_id, c.email, c.id_property)) {
        Some((Some(crm_id), _, _)) => Some((Some(crm_id), None, None)),
        // Sealed under the same tenant and field as the job carries it.
        Some((None, Some(email), _)) => {
            Some((None, Some(seal_stored(sealer, tenant, EMAIL, &email)), None))
        }
        Some((None, None, Some(property))) => {
            Some((None, None, Some((property, external_id.to_owned()))))
        }
        _ => None,
    };
    // The CRM's delete is enqueued before the lead's deletion commits: should Redis fail here,
    // nothing is committed and running the erasure again does all of it. Enqueued after the
    // commit, a failure lost it for good — a second run found no lead and no sync to ask the
    // CRM about. (Should the commit fail after the enqueue, the CRM is asked once more than
    // needed by the next run: the job's message id makes that the same job.)
    let crm = match (lead_id, target) {
        (Some(lead_id), Some((crm_id, email, key))) => {
            let input = crate::integrations::hubspot::erase::EraseInput {
                lead_id,
                crm_id,
                email,
                key,
            };
            // One per lead: an erasure run again does not ask twice.
            let envelope = input.envelope(tenant, format!("crm-erase-{lead_id}"), correlation_id);
            let mut jobs = vec![leadq_queue::NewJob::now(envelope)];
            // A sync in flight: asked again once its claim has ended, when its upsert has
            // landed or never will (the sync's own settle asks too, sooner, but not if its
            // worker dies or Redis fails it then).
            if let (Some(left), Some((email, key))) = (in_flight, as_upserted) {
                let named_as_upserted = crate::integrations::hubspot::erase::EraseInput {
                    lead_id,
                    crm_id: None,
                    email,
                    key,
                };
                let again = named_as_upserted.envelope(
                    tenant,
                    format!("crm-erase-{lead_id}-after-sync"),
                    correlation_id,
                );
                let mut job = leadq_queue::NewJob::now(again);
                job.run_at = Some(chrono::Utc::now() + left + AFTER_CLAIM);
                jobs.push(job);
            }
            let job = queue.enqueue(jobs).await?.swap_remove(0);
            CrmErasure {
                status: "requested",
                job_id: Some(job.job_id),
            }
        }
        _ => CrmErasure {
            status: "not_synced",
            job_id: None,
        },
    };
    // Audited in the transaction of the deletion: written after the queue's cleanup, a Redis
    // failure there left a committed deletion with no entry, and a second run, finding no
    // lead, audited `lead:unknown`.
    let subject = lead_id.map_or_else(|| "lead:unknown".to_owned(), |id| format!("lead:{id}"));
    let auditor = Auditor {
        tenant_id: Some(tenant),
        actor,
        correlation_id,
    };
    auditor
        .entry("lead.erase", &subject)
        .details(serde_json::json!({ "lead_deleted": lead_id.is_some(), "crm": &crm }))
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    // Every kind whose payload names the lead by `external_id`.
    let (mut jobs_removed, mut jobs_running) = (0, 0);
    for kind in [crate::kinds::LEAD_SCORE, crate::kinds::CHATWOOT_EVENT] {
        let (removed, running) = queue
            .erase_where(kind, |e| {
                e.tenant_id == tenant
                    && e.payload.get("external_id").and_then(|v| v.as_str()) == Some(external_id)
            })
            .await?;
        jobs_removed += removed;
        jobs_running += running;
    }
    // Pending syncs of the lead: nothing left to send.
    if let Some(id) = lead_id {
        let (removed, _) = queue
            .erase_where(crate::kinds::CRM_SYNC, |e| {
                e.tenant_id == tenant
                    && e.payload.get("lead_id").and_then(|v| v.as_str()) == Some(&id.to_string())
            })
            .await?;
        jobs_removed += removed;
    }
    let erased = Erased {
        lead_deleted: lead_id.is_some(),
        jobs_removed,
        jobs_running,
        crm,
    };
    // The queued jobs it took away, when there were any (their payloads named the lead).
    if jobs_removed > 0 || jobs_running > 0 {
        let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
        auditor
            .entry("lead.erase_jobs", &subject)
            .details(serde_json::json!({
                "jobs_removed": jobs_removed, "jobs_running": jobs_running,
            }))
            .record(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(erased)
}
