//! `crm_erase`: the right to be forgotten, carried into the tenant's HubSpot. An erasure
//! (`DELETE /v1/leads/{id}`, `leadq lead erase`) of a lead the CRM may hold enqueues one job;
//! this asks HubSpot to delete the contact the GDPR way —
//! `POST /crm/v3/objects/contacts/gdpr-delete` with `{"objectId": "<HubSpot id>"}`, or, when a
//! sync was wanted but recorded no id (one in flight, or one that failed after HubSpot kept
//! the record), `{"objectId": "<e-mail>", "idProperty": "email"}` (the e-mail travels sealed;
//! HubSpot blocks an e-mail it does not find from being recreated), or for a tenant keyed by a
//! property of its own and a lead without an e-mail, `{"objectId": "<external id>",
//! "idProperty": "<property>"}` — which deletes the record
//! and its associations, and records each answer in the tenant's audit trail (`crm.erase`,
//! with the CRM's id or `by: email`, never the address).
//!
//! Answers: 204 → erased; 404 → already gone (done: nothing of the person is left there);
//! 429 → retried after HubSpot's window (a daily limit: at the next UTC midnight), no attempt
//! used; 401/403 → permanent `crm_unauthorized` (dead-lettered, alertable; re-drive once the
//! tenant's credentials are fixed); 5xx and timeouts → transient, retried with backoff.

use std::time::Duration;

use leadq_queue::backend::Job;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::client::{bearer, json_answer, next_utc_midnight, policy_of, retry_after};
use super::*;
use crate::pii::at_rest::seal_stored;

/// The `crm_erase` payload: the contact by the CRM's own id, or else by e-mail (sealed, as
/// personal data always travels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseInput {
    /// The erased lead's id (its audit subject; the row itself is gone).
    pub lead_id: Uuid,
    /// The CRM's object id of the contact, as the last sync recorded it.
    #[serde(default)]
    pub crm_id: Option<String>,
    /// The contact's e-mail, sealed ([`crate::pii`]), when no sync recorded an id.
    #[serde(default)]
    pub email: Option<String>,
    /// For a tenant whose contacts are keyed by a property of its own (`id_property`), the
    /// property and the lead's value of it (its external id, as the sync sends it), when no
    /// sync recorded an id: a lead without an e-mail was otherwise never asked about.
    #[serde(default)]
    pub key: Option<(String, String)>,
}

/// Versions 1 and 2 (`leadq_queue::payload`): version 2 may carry [`EraseInput::key`], which
/// version 1 never does. The erasure writes 2 only for a payload with a key, so a worker of a
/// release that reads only 1 refuses it as `unsupported_version` (re-drivable once workers
/// read it) instead of dead-lettering it for naming no contact.
impl leadq_queue::payload::Payload for EraseInput {
    fn from_versioned(
        version: u32,
        payload: serde_json::Value,
    ) -> Result<Self, leadq_queue::payload::PayloadError> {
        match version {
            1 | 2 => Ok(serde_json::from_value(payload)?),
            v => Err(leadq_queue::payload::PayloadError::Unsupported(v)),
        }
    }
}

impl EraseInput {
    /// The `crm_erase` job asking for this erasure, named `message_id` (one per erasure, so
    /// asking again does not ask twice). Version 2 only for a payload version 1 cannot carry
    /// ([`EraseInput::key`]).
    pub fn envelope(
        &self,
        tenant: Uuid,
        message_id: String,
        correlation_id: &str,
    ) -> leadq_queue::envelope::Envelope {
        let version = if self.key.is_some() { 2 } else { 1 };
        leadq_queue::envelope::Envelope::new(
            tenant,
            format!("system:{}", crate::kinds::ERASURE),
            crate::kinds::CRM_ERASE,
            serde_json::to_value(self).unwrap_or_default(),
        )
        .message_id(message_id)
        .correlation_id(correlation_id)
        .schema_version(version)
    }
}

/// A lead sent in a `crm_sync` call, and the CRM's id of it when the answer gave one.
pub(super) struct Sent<'a> {
    pub(super) row: &'a LeadRow,
    pub(super) crm_id: Option<String>,
}

/// Erases from the CRM, again, the leads of a `crm_sync` call that were erased while the call
/// was in flight (the lead gone, its tombstone there): the erasure's own `crm_erase` may have
/// run before the upsert landed, and HubSpot's delete by id does not stop an upsert by e-mail
/// or by the tenant's key from creating the contact again. Runs in the transaction that
/// settles the call, after its updates, so an erasure that committed first is seen. This is
/// the fast path: should it not happen (Redis fails here, the worker dies before settling),
/// the erasure itself has asked for a delete after the claim's end (`lead::erase`). Returns
/// the leads asked about.
pub(super) async fn after_sync(
    tx: &mut sqlx::PgConnection,
    deps: &Deps,
    meta: &leadq_queue::envelope::JobMeta,
    id_property: &str,
    sent: &[Sent<'_>],
) -> Result<u64, JobError> {
    if sent.is_empty() {
        return Ok(0);
    }
    let tenant = meta.tenant_id;
    let ids: Vec<Uuid> = sent.iter().map(|s| s.row.id).collect();
    let external: Vec<&str> = sent.iter().map(|s| s.row.external_id.as_str()).collect();
    // Erased while the call could have been in flight: since its claim was taken, at most
    // a claim's length ago (a tombstone of an older erasure is not this lead's).
    let erased: Vec<Uuid> = sqlx::query_scalar(
        "select r.id from unnest($2::uuid[], $3::text[]) as r(id, external_id)
          where not exists (select 1 from leads l where l.id = r.id)
            and exists (select 1 from erasures e
                         where e.tenant_id = $1 and e.external_id = r.external_id
                           and e.erased_at >= now() - make_interval(secs => $4))",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&external)
    .bind(2.0 * super::CLAIM.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let mut jobs = Vec::new();
    for s in sent.iter().filter(|s| erased.contains(&s.row.id)) {
        let input = EraseInput {
            lead_id: s.row.id,
            crm_id: s.crm_id.clone(),
            // As the call named the contact: by e-mail (stored sealed, or in clear before
            // its conversion), or by the tenant's own property.
            email: (s.crm_id.is_none() && id_property == "email")
                .then_some(s.row.email.as_deref())
                .flatten()
                .map(|e| seal_stored(&deps.sealer, tenant, crate::pii::field::EMAIL, e)),
            key: (s.crm_id.is_none() && id_property != "email")
                .then(|| (id_property.to_owned(), s.row.external_id.clone())),
        };
        if input.crm_id.is_none() && input.email.is_none() && input.key.is_none() {
            continue;
        }
        let message_id = format!("crm-erase-{}-after-{}", s.row.id, meta.job_id);
        jobs.push(leadq_queue::NewJob::now(input.envelope(
            tenant,
            message_id,
            &meta.correlation_id,
        )));
    }
    let n = jobs.len() as u64;
    if n > 0 {
        deps.queue
            .enqueue(jobs)
            .await
            .map_err(|e| JobError::transient("queue_unavailable", e))?;
        tracing::warn!(
            leads = n,
            "Leads erased while their CRM sync was in flight: their contacts are erased again."
        );
    }
    Ok(n)
}

/// How HubSpot answered, for the audit trail.
fn audit_outcome(r: &Result<&'static str, JobError>) -> &'static str {
    match r {
        Ok(outcome) => outcome,
        Err(e) => e.code(),
    }
}

/// The `crm_erase` handler.
pub async fn run(job: Job<EraseInput>, deps: Data<Deps>) -> Result<(), JobError> {
    let meta = &job.meta;
    let tenant = meta.tenant_id;
    let EraseInput {
        lead_id,
        crm_id,
        email,
        key,
    } = &job.payload;
    // HubSpot's GDPR delete by its own id, or by e-mail (which HubSpot then also blocks from
    // being recreated, should an upsert still be in flight), or by the tenant's own id
    // property.
    let (body, by) = match (crm_id, email, key) {
        (Some(id), _, _) => (serde_json::json!({ "objectId": id }), "crm_id"),
        (None, Some(sealed), _) => {
            let mut email = Some(sealed.clone());
            deps.sealer
                .open_in_place(tenant, crate::pii::field::EMAIL, &mut email)?;
            (
                serde_json::json!({ "objectId": email, "idProperty": "email" }),
                "email",
            )
        }
        (None, None, Some((property, value))) => (
            serde_json::json!({ "objectId": value, "idProperty": property }),
            "id_property",
        ),
        (None, None, None) => {
            return Err(JobError::permanent(
                "invalid_payload",
                anyhow::anyhow!("a crm_erase job names neither the CRM's id nor an e-mail"),
            ))
        }
    };
    let pool = &deps.pool;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let conn = settings::crm_connection(&mut tx, &deps.sealer, tenant, false)
        .await
        .map_err(|e| match e {
            settings::IntegrationError::Db(d) => JobError::from(d),
            other => JobError::permanent("crm_config_unreadable", other),
        })?
        .ok_or_else(|| {
            // The tenant removed its CRM since: nothing leadq can reach holds the contact.
            JobError::permanent("crm_not_configured", anyhow::anyhow!("no CRM connection"))
        })?;
    tx.commit().await?;
    let answer = delete(&deps, tenant, &conn, body).await;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    meta.auditor()
        .entry("crm.erase", &format!("lead:{lead_id}"))
        .outcome(audit_outcome(&answer))
        .details(serde_json::json!({
            "job_id": meta.job_id, "attempt": meta.attempt, "crm": "hubspot", "crm_id": crm_id,
            "by": by,
        }))
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    let outcome = answer?;
    tracing::info!(outcome, "Contact erased from the CRM.");
    Ok(())
}

/// Sends HubSpot's GDPR delete with `body`: `Ok("ok")`, `Ok("already_gone")`, or why not.
async fn delete(
    deps: &Deps,
    tenant: Uuid,
    conn: &CrmConnection,
    body: Value,
) -> Result<&'static str, JobError> {
    let token = bearer(deps, tenant, conn).await?;
    let url = format!("{}/crm/v3/objects/contacts/gdpr-delete", conn.base_url);
    let span = tracing::info_span!(
        "POST /crm/v3/objects/contacts/gdpr-delete",
        otel.kind = "client",
        http.request.method = "POST"
    );
    let started = Instant::now();
    let res = deps
        .http
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .instrument(span)
        .await;
    metrics::histogram!(m::CRM_REQUEST_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            metrics::counter!(m::CRM_REQUESTS_TOTAL, m::label::STATUS => "error").increment(1);
            return Err(JobError::transient("crm_unavailable", e.without_url()));
        }
    };
    let status = res.status().as_u16();
    metrics::counter!(m::CRM_REQUESTS_TOTAL, m::label::STATUS => status.to_string()).increment(1);
    let headers = res.headers().clone();
    let body = json_answer(res).await;
    match status {
        200 | 204 => Ok("ok"),
        404 => Ok("already_gone"),
        429 => {
            let policy = policy_of(&body);
            metrics::counter!(m::CRM_RATE_LIMITED_TOTAL, m::label::POLICY => policy).increment(1);
            let wait = if policy == "daily" {
                (next_utc_midnight(Utc::now()) - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::from_secs(3600))
            } else {
                retry_after(&headers).unwrap_or(Duration::from_secs(10))
            };
            Err(JobError::RateLimited {
                code: if policy == "daily" {
                    "crm_daily_limit"
                } else {
                    "crm_rate_limited"
                },
                retry_after: wait,
            })
        }
        401 | 403 => Err(JobError::permanent(
            "crm_unauthorized",
            anyhow::anyhow!("the CRM answered {status} (credentials refused)"),
        )),
        s if s >= 500 => Err(JobError::transient(
            "crm_unavailable",
            anyhow::anyhow!("the CRM answered {s}"),
        )),
        s => Err(JobError::permanent(
            "crm_rejected",
            anyhow::anyhow!("the CRM answered {s} to a GDPR delete"),
        )),
    }
}
