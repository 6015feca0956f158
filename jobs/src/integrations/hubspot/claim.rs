//! A `crm_sync` batch's claim: the rows of its tenant that one HubSpot call will carry.
//!
//! The job's own lead comes first, then the tenant's other pending rows, oldest change first,
//! up to the CRM's batch size; each claimed row is held (`claimed_by`, `claim_until`) so that
//! concurrent jobs of the tenant coalesce instead of sending a lead twice, and a dead worker's
//! claim expires ([`super::CLAIM`]).
//!
//! This is the one statement of `crm_sync` whose work could grow with a tenant's backlog: after
//! a HubSpot outage or a daily-limit pause a tenant can hold tens of thousands of pending rows,
//! and every job of the catch-up claims again. So the own row is found by its key and the others
//! by the pending index in order, stopping at the batch size — a claim reads about as many rows
//! as it takes, however many wait (`crm::a_claim_reads_its_batch_not_the_tenants_backlog`).

use uuid::Uuid;

/// A claimed lead, as stored (its personal fields sealed: [`LeadRow::opened`] opens them).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LeadRow {
    pub(super) id: Uuid,
    pub(super) external_id: String,
    pub(super) name: Option<String>,
    pub(super) email: Option<String>,
    pub(super) phone: Option<String>,
    pub(super) score: Option<i32>,
    pub(super) tier: Option<String>,
    pub(super) wanted_version: i64,
}

impl LeadRow {
    /// The lead's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The row with its personal fields opened.
    pub(super) fn opened(
        &self,
        sealer: &crate::pii::Sealer,
        tenant: Uuid,
    ) -> Result<Self, crate::pii::at_rest::Unreadable> {
        use crate::pii::{at_rest::open_stored, field};
        Ok(Self {
            name: open_stored(sealer, tenant, field::NAME, self.name.clone())?,
            email: open_stored(sealer, tenant, field::EMAIL, self.email.clone())?,
            phone: open_stored(sealer, tenant, field::PHONE, self.phone.clone())?,
            ..self.clone()
        })
    }
}

/// Claims up to `batch_size` pending rows of `tenant` for the job `by`, `lead`'s first when it
/// is pending and not held by another live batch. `tx` is a transaction acting for `tenant`,
/// with nothing left to run but its commit (sorts are off for the rest of it); the claim holds
/// once it commits.
pub async fn claim(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    lead: Uuid,
    batch_size: i64,
    by: Uuid,
) -> Result<Vec<LeadRow>, sqlx::Error> {
    // The others walk `crm_sync_claimable` to the batch's room; with sorts allowed the backlog
    // was read and sorted, on disk at 50,000 rows (`db::without_sorts`).
    leadq_platform::db::without_sorts(&mut *tx).await?;
    sqlx::query_as(
        // The own row by its key, the others by the pending index (`crm_sync_pending`:
        // tenant, then oldest change) up to the batch's room: neither reads the rows it does not
        // take. (Ordered by "is it the own row" as well, as this once was, every pending row of
        // the tenant had to be read and sorted.) Rows held by a live batch, or failed for good,
        // are skipped; their changes are recent, so they are not the ones read first.
        // The version recorded as sent is the one of the data read (`least` of the wish and the
        // lead's version): a lead written and committed between this statement's snapshot and
        // its lock on the row is locked at its new wish but read as it was, and recording the
        // new wish as synced would have kept the new data from the CRM for good.
        "with own as (
             select lead_id from crm_sync_state
              where tenant_id = $1 and lead_id = $2 and synced_version < wanted_version
                and (failed_version is null or failed_version < wanted_version)
                and (claim_until is null or claim_until < now())
                for update skip locked),
         others as (
             select lead_id from crm_sync_state
              where tenant_id = $1 and lead_id <> $2 and synced_version < wanted_version
                and (failed_version is null or failed_version < wanted_version)
                and (claim_until is null or claim_until < now())
              order by updated_at
              limit $3 - 1
                for update skip locked),
         claimed as (
             update crm_sync_state s
                set claimed_by = $4, claim_until = now() + make_interval(secs => $5)
               from (select lead_id from own union all select lead_id from others) picked
              where s.lead_id = picked.lead_id
             returning s.lead_id, s.wanted_version)
         select l.id, l.external_id, l.name, l.email, l.phone, l.score, l.tier,
                least(c.wanted_version, l.version) as wanted_version
           from claimed c join leads l on l.id = c.lead_id",
    )
    .bind(tenant)
    .bind(lead)
    .bind(batch_size)
    .bind(by)
    .bind(super::CLAIM.as_secs_f64())
    .fetch_all(tx)
    .await
}
