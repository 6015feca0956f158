//! `crm_sync`: upsert qualified leads into the tenant's HubSpot CRM, in batches, within its
//! rate limits.
//!
//! The contract ([`docs/contracts/hubspot.md`](../../../../docs/contracts/hubspot.md), from
//! HubSpot's own SDK and docs):
//! `POST /crm/v3/objects/contacts/batch/upsert` with `{"inputs": [{"id", "idProperty",
//! "properties": {str: str}}]}`, at most 100 inputs, values always strings; 200 with
//! `results`, or 207 with `errors[].context.ids` for the inputs that failed; 429 bodies name
//! their `policyName`; auth is a private-app token or OAuth (refresh before expiry, never on
//! 401).
//!
//! How a job runs (one job per lead version, [`crate::lead::sync::request`]):
//! 1. The lead's `crm_sync_state` row says whether this version is already synced (a replay:
//!    done, no call) or failed for good (dead-letter with the recorded reason).
//! 2. The job claims up to `batch_size` pending rows of its tenant, its own first
//!    (`FOR UPDATE SKIP LOCKED`, with an expiring claim): pending jobs of the same tenant are
//!    coalesced into one call, and jobs whose rows were synced by another job's batch find
//!    them done. If another live batch holds its row, the job waits for it (rate-limited
//!    retry, no attempt used).
//! 3. Leads are validated before they are sent; an invalid one fails on its own.
//! 4. Outcomes: 200 → synced; 207 → per record (failed records retried, or failed for good
//!    when HubSpot says the data is wrong); 429 `TEN_SECONDLY_ROLLING` → retry after the
//!    window; 429 `DAILY` → the tenant's CRM calls pause until the next UTC midnight (not
//!    hammered), counted for alerting; 401/403 → permanent (`crm_unauthorized`, alertable);
//!    5xx, timeouts → transient (the queue's exponential backoff with jitter). An exhausted
//!    window seen in `X-HubSpot-RateLimit-Remaining` pauses the tenant before HubSpot has to
//!    say 429.
//!
//! `mod.rs` is the job (batches, outcomes per record); `claim.rs` takes a batch's rows;
//! `client.rs` is the HubSpot side (token, call, answers, pauses); `erase.rs` is `crm_erase`,
//! an erasure carried into the CRM.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use apalis_core::task::data::Data;
use chrono::{DateTime, Utc};
use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

mod claim;
mod client;
pub mod erase;

use crate::integrations::settings::{self, CrmAuth, CrmConnection, IntegrationError};
use crate::lead::sync::SyncInput;
use crate::Deps;
pub use claim::{claim, LeadRow};
use client::send;
use leadq_queue::backend::Job;
use leadq_queue::error::JobError;

/// How long a batch claim lasts: longer than a batch's calls may take ([`SEND_DEADLINE`]), so
/// only a dead worker's claim expires.
const CLAIM: Duration = Duration::from_secs(120);
/// How long a batch's calls to the CRM may take in all (a refused batch is split into up to 16
/// calls of up to 17 s each): well inside [`CLAIM`].
const SEND_DEADLINE: Duration = Duration::from_secs(90);
/// An OAuth token is refreshed when it has less than this left.
const REFRESH_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// Wait before looking again at a row another batch holds.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(2);

/// The HTTP client for CRM calls (shared, with timeouts).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(12))
        .user_agent(concat!("leadq/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with only timeouts set builds")
}

#[derive(sqlx::FromRow)]
struct State {
    wanted_version: i64,
    synced_version: i64,
    failed_version: Option<i64>,
    failure_code: Option<String>,
}

/// How one claimed row ended.
#[derive(Debug, Clone, PartialEq)]
enum RowOutcome {
    Synced { crm_id: Option<String> },
    Failed { code: &'static str },
    Retry { code: &'static str },
}

fn crm_err(e: IntegrationError) -> JobError {
    match e {
        IntegrationError::Db(d) => JobError::from(d),
        other => JobError::permanent("crm_config_unreadable", other),
    }
}

/// How a record is named when results are matched to the leads sent: an e-mail as HubSpot
/// keeps it (lower case), any other id property's value exactly as sent (`Lead-42` and
/// `lead-42` are two leads). Inputs, results, errors and the 200 answer's fallback all go
/// through this, so a lead is never looked up under another spelling than its result's.
pub(super) fn record_key(id_property: &str, value: &str) -> String {
    if id_property == "email" {
        value.to_ascii_lowercase()
    } else {
        value.to_owned()
    }
}

/// The properties sent for a lead, or why it cannot be sent.
fn properties(
    lead: &LeadRow,
    id_property: &str,
) -> Result<(String, BTreeMap<&'static str, String>), &'static str> {
    let email = lead
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    if let Some(e) = email {
        let ok = e.len() <= 254
            && e.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
            })
            && !e.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err("crm_invalid_email");
        }
    }
    let id = if id_property == "email" {
        record_key(id_property, email.ok_or("crm_missing_email")?)
    } else {
        record_key(id_property, &lead.external_id)
    };
    let mut p = BTreeMap::new();
    if let Some(e) = email {
        p.insert("email", e.to_owned());
    }
    if let Some(name) = lead
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let (first, last) = name.split_once(' ').unwrap_or((name, ""));
        p.insert("firstname", first.chars().take(100).collect());
        if !last.trim().is_empty() {
            p.insert("lastname", last.trim().chars().take(100).collect());
        }
    }
    if let Some(phone) = &lead.phone {
        p.insert("phone", phone.clone());
    }
    if let Some(s) = lead.score {
        p.insert("leadq_score", s.to_string());
    }
    if let Some(t) = &lead.tier {
        p.insert("leadq_tier", t.clone());
    }
    // With a custom id property, HubSpot stores `id` in it: the lead's external id.
    Ok((id, p))
}

/// The `crm_sync` handler.
pub async fn run(job: Job<SyncInput>, deps: Data<Deps>) -> Result<(), JobError> {
    let meta = &job.meta;
    let tenant = meta.tenant_id;
    let SyncInput { lead_id, version } = job.payload;
    let pool = &deps.pool;

    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let state: Option<State> = sqlx::query_as(
        "select wanted_version, synced_version, failed_version, failure_code
           from crm_sync_state where tenant_id = $1 and lead_id = $2",
    )
    .bind(tenant)
    .bind(lead_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(state) = state else {
        tracing::info!("Nothing to sync: the lead is gone or has no CRM state.");
        return Ok(());
    };
    if state.synced_version >= version {
        tracing::info!(version, synced = state.synced_version, "Already synced.");
        return Ok(());
    }
    if let Some(failed) = state.failed_version {
        if failed >= state.wanted_version {
            let code = state.failure_code.unwrap_or_else(|| "crm_failed".into());
            return Err(JobError::permanent(
                static_code(&code),
                anyhow::anyhow!("the CRM refused this lead version ({code})"),
            ));
        }
    }
    let conn = settings::crm_connection(&mut tx, &deps.sealer, tenant, false)
        .await
        .map_err(crm_err)?
        .ok_or_else(|| {
            JobError::permanent("crm_not_configured", anyhow::anyhow!("no CRM connection"))
        })?;
    if let Some(until) = conn.paused_until.filter(|u| *u > Utc::now()) {
        return Err(JobError::RateLimited {
            code: "crm_paused",
            retry_after: (until - Utc::now()).to_std().unwrap_or(IN_FLIGHT_WAIT),
        });
    }
    let claimed = claim(&mut tx, tenant, lead_id, conn.batch_size, meta.job_id).await?;
    tx.commit().await?;
    if !claimed.iter().any(|l| l.id == lead_id) {
        // Another live batch holds this lead (or just synced it): look again shortly.
        release(&deps, meta, &claimed, None).await?;
        return Err(JobError::RateLimited {
            code: "crm_batch_in_flight",
            retry_after: IN_FLIGHT_WAIT,
        });
    }

    let mut outcomes: HashMap<Uuid, RowOutcome> = HashMap::new();
    let mut inputs = Vec::new();
    let mut by_id: HashMap<String, Uuid> = HashMap::new();
    for sealed in &claimed {
        // Stored sealed (crate::pii::at_rest); opened for this call only.
        let Ok(lead) = sealed.opened(&deps.sealer, tenant) else {
            outcomes.insert(
                sealed.id,
                RowOutcome::Failed {
                    code: "sealed_data_unreadable",
                },
            );
            continue;
        };
        let lead = &lead;
        match properties(lead, &conn.id_property) {
            Ok((id, props)) => {
                if by_id.contains_key(&id) {
                    // Two leads with one email: HubSpot needs unique ids per call; the
                    // second goes in a later batch.
                    outcomes.insert(
                        lead.id,
                        RowOutcome::Retry {
                            code: "crm_duplicate_id",
                        },
                    );
                    continue;
                }
                by_id.insert(id.clone(), lead.id);
                inputs.push(serde_json::json!({
                    "id": id, "idProperty": conn.id_property, "properties": props,
                }));
            }
            Err(code) => {
                outcomes.insert(lead.id, RowOutcome::Failed { code });
            }
        }
    }
    let sent_ids: Vec<Uuid> = by_id.values().copied().collect();
    if !inputs.is_empty() {
        // Within the claim, always: a batch still sending after its claim ended could land an
        // upsert after an erasure's delete that waited for the claim (`lead::erase`).
        let sent =
            match tokio::time::timeout(SEND_DEADLINE, send(&deps, tenant, &conn, inputs)).await {
                Ok(sent) => sent,
                Err(_) => Err(JobError::transient(
                    "crm_unavailable",
                    anyhow::anyhow!("the CRM took longer than the batch's deadline"),
                )),
            };
        let sent = match sent {
            Ok(s) => s,
            Err(e) => {
                // The call may have reached HubSpot before it failed.
                let call = Call {
                    id_property: &conn.id_property,
                    sent: &sent_ids,
                    code: e.code(),
                };
                release(&deps, meta, &claimed, Some(call)).await?;
                return Err(e);
            }
        };
        for (id, lead) in &by_id {
            let o = sent.get(id).cloned().unwrap_or(RowOutcome::Retry {
                code: "crm_result_missing",
            });
            outcomes.insert(*lead, o);
        }
    }
    let call = Call {
        id_property: &conn.id_property,
        sent: &sent_ids,
        code: "",
    };
    settle(&deps, meta, &claimed, &outcomes, &call).await?;
    let synced = outcomes
        .values()
        .filter(|o| matches!(o, RowOutcome::Synced { .. }))
        .count();
    tracing::info!(batch = claimed.len(), synced, "CRM batch sent.");
    match outcomes.get(&lead_id) {
        Some(RowOutcome::Synced { .. }) => Ok(()),
        Some(RowOutcome::Failed { code }) => Err(JobError::permanent(
            code,
            anyhow::anyhow!("the CRM refused the lead ({code})"),
        )),
        Some(RowOutcome::Retry { code }) => Err(JobError::transient(
            code,
            anyhow::anyhow!("the lead was not synced this time ({code})"),
        )),
        None => Err(JobError::transient(
            "crm_result_missing",
            anyhow::anyhow!("no outcome for the lead"),
        )),
    }
}

/// The stable code for a stored failure code (codes are `&'static str` everywhere else).
fn static_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "crm_invalid_email",
        "crm_missing_email",
        "crm_rejected",
        "crm_invalid_data",
        "sealed_data_unreadable",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("crm_failed")
}

/// One lead's upsert in the audit trail: its version, the CRM's object id when it took it,
/// the outcome (`ok` or the code the CRM or the call failed with). No personal data.
async fn audit_upsert(
    tx: &mut sqlx::PgConnection,
    auditor: &Auditor<'_>,
    job: Uuid,
    row: &LeadRow,
    outcome: &str,
    crm_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    auditor
        .entry("crm.upsert", &format!("lead:{}", row.id))
        .outcome(outcome)
        .details(serde_json::json!({
            "job_id": job, "version": row.wanted_version, "crm": "hubspot", "crm_id": crm_id,
        }))
        .record(tx)
        .await
}

/// The leads a call to the CRM carried, how the CRM keys them, and (for a call that failed)
/// its code.
struct Call<'a> {
    id_property: &'a str,
    sent: &'a [Uuid],
    code: &'static str,
}

impl Call<'_> {
    /// The claimed rows the call carried, with the CRM's id where its answer gave one.
    fn sent<'r>(
        &self,
        rows: &'r [LeadRow],
        outcomes: Option<&HashMap<Uuid, RowOutcome>>,
    ) -> Vec<erase::Sent<'r>> {
        rows.iter()
            .filter(|r| self.sent.contains(&r.id))
            .map(|row| erase::Sent {
                row,
                crm_id: match outcomes.and_then(|o| o.get(&row.id)) {
                    Some(RowOutcome::Synced { crm_id }) => crm_id.clone(),
                    _ => None,
                },
            })
            .collect()
    }
}

/// Hands claimed rows back untouched; when a call to the CRM failed (`failed`), each lead's
/// failed upsert is audited with its code, and the leads erased meanwhile are erased from the
/// CRM again ([`erase::after_sync`]: the call may have reached it).
async fn release(
    deps: &Deps,
    meta: &leadq_queue::envelope::JobMeta,
    rows: &[LeadRow],
    failed: Option<Call<'_>>,
) -> Result<(), JobError> {
    let (auditor, job) = (meta.auditor(), meta.job_id);
    let tenant = meta.tenant_id;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut tx = db::begin(&deps.pool, Scope::Tenant(tenant)).await?;
    if let Some(call) = &failed {
        for row in rows {
            audit_upsert(&mut tx, &auditor, job, row, call.code, None).await?;
        }
        erase::after_sync(
            &mut tx,
            deps,
            meta,
            call.id_property,
            &call.sent(rows, None),
        )
        .await?;
    }
    sqlx::query(
        "update crm_sync_state set claimed_by = null, claim_until = null
          where tenant_id = $1 and claimed_by = $2 and lead_id = any($3)",
    )
    .bind(tenant)
    .bind(job)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Retryable refusals of one record by HubSpot after which it fails for good (the `crm_sync`
/// kind's own attempts).
const ROW_CLAIMS: i32 = 10;

/// Writes each claimed row's outcome and drops the claim, auditing each lead's upsert
/// (`crm.upsert`: the CRM's object id, or the code it failed with) in the same transaction;
/// the leads erased while the call was in flight are erased from the CRM again
/// ([`erase::after_sync`]).
async fn settle(
    deps: &Deps,
    meta: &leadq_queue::envelope::JobMeta,
    rows: &[LeadRow],
    outcomes: &HashMap<Uuid, RowOutcome>,
    call: &Call<'_>,
) -> Result<(), JobError> {
    let (auditor, job) = (&meta.auditor(), meta.job_id);
    let tenant = meta.tenant_id;
    let mut tx = db::begin(&deps.pool, Scope::Tenant(tenant)).await?;
    for row in rows {
        let (outcome, crm_id) = match outcomes.get(&row.id) {
            Some(RowOutcome::Synced { crm_id }) => ("ok", crm_id.as_deref()),
            Some(RowOutcome::Failed { code }) | Some(RowOutcome::Retry { code }) => (*code, None),
            None => ("crm_result_missing", None),
        };
        audit_upsert(&mut tx, auditor, job, row, outcome, crm_id).await?;
        let (synced, crm_id, failed, code) = match outcomes.get(&row.id) {
            Some(RowOutcome::Synced { crm_id }) => {
                (Some(row.wanted_version), crm_id.clone(), None, None)
            }
            Some(RowOutcome::Failed { code }) => {
                (None, None, Some(row.wanted_version), Some(*code))
            }
            Some(RowOutcome::Retry { .. }) | None => (None, None, None, None),
        };
        // A record HubSpot keeps refusing with a retryable answer (a 207's other categories,
        // a result missing from the answer) fails for good at the ROW_CLAIMS-th such answer:
        // it was asked again by every retry and then by the reconcile every five minutes,
        // without end. Only those answers count (`attempts`): not a claim handed back unsent,
        // a duplicate id held for a later batch, or a batch cut short by a rate limit or an
        // outage; a success or a failure starts the count again.
        let counts = match outcomes.get(&row.id) {
            Some(RowOutcome::Retry { code }) => {
                matches!(*code, "crm_partial_failure" | "crm_result_missing")
            }
            None => true,
            _ => false,
        };
        sqlx::query(
            "update crm_sync_state
                set synced_version = greatest(synced_version, coalesce($4, synced_version)),
                    crm_id = coalesce($5, crm_id),
                    failed_version = coalesce($6,
                        case when $11 and attempts + 1 >= $8 then $10::bigint end,
                        failed_version),
                    failure_code = coalesce($7,
                        case when $11 and attempts + 1 >= $8 then $9 end,
                        failure_code),
                    attempts = case when $4 is not null or $6 is not null then 0
                                    when $11 and attempts + 1 >= $8 then 0
                                    when $11 then attempts + 1
                                    else attempts end,
                    claimed_by = null, claim_until = null, updated_at = now()
              where tenant_id = $1 and lead_id = $2 and claimed_by = $3",
        )
        .bind(tenant)
        .bind(row.id)
        .bind(job)
        .bind(synced)
        .bind(crm_id)
        .bind(failed)
        .bind(code)
        .bind(ROW_CLAIMS)
        .bind(outcome)
        .bind(row.wanted_version)
        .bind(counts)
        .execute(&mut *tx)
        .await?;
    }
    let sent = call.sent(rows, Some(outcomes));
    erase::after_sync(&mut tx, deps, meta, call.id_property, &sent).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::client::{next_utc_midnight, policy_of, retry_after};
    use super::*;

    #[test]
    fn a_retry_after_is_read_in_seconds_and_bounded() {
        let at = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("retry-after", v.parse().unwrap());
            retry_after(&h)
        };
        assert_eq!(at("7"), Some(Duration::from_secs(7)));
        assert_eq!(at("99999999999"), Some(Duration::from_secs(600)));
        assert_eq!(at(&u64::MAX.to_string()), Some(Duration::from_secs(600)));
        assert_eq!(at("soon"), None);
    }

    #[test]
    fn an_email_key_is_matched_in_lower_case_and_any_other_as_sent() {
        assert_eq!(record_key("email", "Ada@Example.com"), "ada@example.com");
        assert_eq!(record_key("leadq_id", "Lead-42"), "Lead-42");
    }

    fn lead(email: Option<&str>, name: Option<&str>) -> LeadRow {
        LeadRow {
            id: Uuid::nil(),
            external_id: "tg-1".into(),
            name: name.map(Into::into),
            email: email.map(Into::into),
            phone: Some("+447700900123".into()),
            score: Some(95),
            tier: Some("hot".into()),
            wanted_version: 2,
        }
    }

    #[test]
    fn properties_are_strings_and_invalid_leads_are_caught_before_sending() {
        let (id, p) = properties(
            &lead(Some("Ada@Example.com"), Some("Ada King Lovelace")),
            "email",
        )
        .unwrap();
        assert_eq!(id, "ada@example.com");
        assert_eq!(p["firstname"], "Ada");
        assert_eq!(p["lastname"], "King Lovelace");
        assert_eq!(p["leadq_score"], "95");
        assert_eq!(
            properties(&lead(None, None), "email"),
            Err("crm_missing_email")
        );
        assert_eq!(
            properties(&lead(Some("not an email"), None), "email"),
            Err("crm_invalid_email")
        );
        let (id, p) = properties(&lead(None, None), "leadq_id").unwrap();
        assert_eq!(id, "tg-1");
        assert!(!p.contains_key("email"));
    }

    #[test]
    fn rate_limit_policies_are_read_from_the_body() {
        let ten = serde_json::json!({"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"});
        let daily =
            serde_json::json!({"status":"error","errorType":"RATE_LIMIT","policyName":"DAILY"});
        let search =
            serde_json::json!({"status":"error","message":"You have reached your secondly limit."});
        assert_eq!(policy_of(&ten), "ten_secondly_rolling");
        assert_eq!(policy_of(&daily), "daily");
        assert_eq!(policy_of(&search), "secondly");
        assert_eq!(policy_of(&Value::Null), "other");
    }

    #[test]
    fn the_daily_pause_ends_at_the_next_utc_midnight() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T17:45:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            next_utc_midnight(t).to_rfc3339(),
            "2026-11-24T00:00:00+00:00"
        );
    }
}
