//! Erasure of a person known only by an email address or a phone number: every lead of the
//! tenant whose stored email or phone is that value (found by its blind index,
//! [`crate::pii::index`]) is erased as [`super::erase`] erases one, and every queued or
//! dead-lettered job still carrying the value for a lead not stored yet is removed. The audit
//! entry (`lead.erase_by_contact`) names the field and the counts, never the value.

use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{erase, EraseError, Erased};
use crate::pii::index::normalize;
use crate::pii::{at_rest, field, Sealer};

/// The contact field a person is erased by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactField {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
}

impl ContactField {
    fn name(self) -> &'static str {
        match self {
            Self::Email => field::EMAIL,
            Self::Phone => field::PHONE,
        }
    }
}

/// One lead erased because its contact matched.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErasedLead {
    /// The producer's id of the lead.
    pub external_id: String,
    /// What was erased for it.
    pub erased: Erased,
}

/// What an erasure by email or phone removed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErasedByContact {
    /// The tenant's leads with that email or phone, each erased.
    pub leads: Vec<ErasedLead>,
    /// Queued or dead-lettered jobs carrying the value for a lead not stored (yet), removed.
    pub jobs_removed: u64,
    /// Such jobs running right now (their lead, once written, is found by a second erasure).
    pub jobs_running: u64,
}

impl ErasedByContact {
    /// Whether there was anything to erase.
    pub fn found_anything(&self) -> bool {
        !self.leads.is_empty() || self.jobs_removed > 0 || self.jobs_running > 0
    }
}

/// Erases everything `tenant` holds about the person with this email or phone (see the
/// module docs). Idempotent.
#[allow(clippy::too_many_arguments)]
pub async fn erase_by_contact(
    pool: &PgPool,
    queue: &leadq_queue::Queue,
    sealer: &Sealer,
    tenant: Uuid,
    by: ContactField,
    value: &str,
    actor: &str,
    correlation_id: &str,
) -> Result<ErasedByContact, EraseError> {
    let f = by.name();
    let ids = {
        let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
        let ids = at_rest::find_by_contact(&mut tx, sealer, tenant, f, value).await?;
        tx.commit().await?;
        ids
    };
    let mut leads = Vec::with_capacity(ids.len());
    for external_id in ids {
        let erased = erase(
            pool,
            queue,
            sealer,
            tenant,
            &external_id,
            actor,
            correlation_id,
        )
        .await?;
        leads.push(ErasedLead {
            external_id,
            erased,
        });
    }
    // Jobs that carry the value (sealed) for a lead the store has not written yet.
    let wanted = normalize(f, value);
    let carries = |sealed: Option<&serde_json::Value>| {
        sealed
            .and_then(|v| v.as_str())
            .and_then(|s| sealer.open(tenant, f, s).ok())
            .is_some_and(|plain| wanted.is_some() && normalize(f, &plain) == wanted)
    };
    let (mut jobs_removed, mut jobs_running) = (0, 0);
    for (kind, at) in [
        (crate::kinds::LEAD_SCORE, None),
        (crate::kinds::CHATWOOT_EVENT, Some("contact")),
    ] {
        let (removed, running) = queue
            .erase_where(kind, |e| {
                let holder = match at {
                    Some(key) => e.payload.get(key),
                    None => Some(&e.payload),
                };
                e.tenant_id == tenant && carries(holder.and_then(|h| h.get(f)))
            })
            .await?;
        jobs_removed += removed;
        jobs_running += running;
    }
    let out = ErasedByContact {
        leads,
        jobs_removed,
        jobs_running,
    };
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    Auditor {
        tenant_id: Some(tenant),
        actor,
        correlation_id,
    }
    .entry("lead.erase_by_contact", &format!("tenant:{tenant}"))
    .details(serde_json::json!({
        "by": f, "leads": out.leads.len(),
        "jobs_removed": out.jobs_removed, "jobs_running": out.jobs_running,
    }))
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(out)
}
