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

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use apalis_core::task::data::Data;
use chrono::{DateTime, Utc};
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::integrations::settings::{self, CrmAuth, CrmConnection, IntegrationError};
use crate::lead::sync::SyncInput;
use crate::Deps;
use leadq_queue::backend::Job;
use leadq_queue::error::JobError;

/// How long a batch claim lasts: longer than a call can take, so only a dead worker's claim
/// expires.
const CLAIM: Duration = Duration::from_secs(120);
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

#[derive(Debug, Clone, sqlx::FromRow)]
struct LeadRow {
    id: Uuid,
    external_id: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    score: Option<i32>,
    tier: Option<String>,
    wanted_version: i64,
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
        email.ok_or("crm_missing_email")?.to_ascii_lowercase()
    } else {
        lead.external_id.clone()
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
    let claimed: Vec<LeadRow> = sqlx::query_as(
        "with picked as (
             select lead_id from crm_sync_state
              where tenant_id = $1 and synced_version < wanted_version
                and (failed_version is null or failed_version < wanted_version)
                and (claim_until is null or claim_until < now())
              order by (lead_id = $2) desc, updated_at
              limit $3
              for update skip locked),
         claimed as (
             update crm_sync_state s
                set claimed_by = $4, claim_until = now() + make_interval(secs => $5),
                    attempts = attempts + 1
               from picked where s.lead_id = picked.lead_id
             returning s.lead_id, s.wanted_version)
         select l.id, l.external_id, l.name, l.email, l.phone, l.score, l.tier,
                c.wanted_version
           from claimed c join leads l on l.id = c.lead_id",
    )
    .bind(tenant)
    .bind(lead_id)
    .bind(conn.batch_size)
    .bind(meta.job_id)
    .bind(CLAIM.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    if !claimed.iter().any(|l| l.id == lead_id) {
        // Another live batch holds this lead (or just synced it): look again shortly.
        release(pool, tenant, meta.job_id, &claimed).await?;
        return Err(JobError::RateLimited {
            code: "crm_batch_in_flight",
            retry_after: IN_FLIGHT_WAIT,
        });
    }

    let mut outcomes: HashMap<Uuid, RowOutcome> = HashMap::new();
    let mut inputs = Vec::new();
    let mut by_id: HashMap<String, Uuid> = HashMap::new();
    for lead in &claimed {
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
    if !inputs.is_empty() {
        let sent = send(&deps, tenant, &conn, inputs).await;
        let sent = match sent {
            Ok(s) => s,
            Err(e) => {
                release(pool, tenant, meta.job_id, &claimed).await?;
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
    settle(pool, tenant, meta.job_id, &claimed, &outcomes).await?;
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
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("crm_failed")
}

/// Hands claimed rows back untouched.
async fn release(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    job: Uuid,
    rows: &[LeadRow],
) -> Result<(), JobError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
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

/// Writes each claimed row's outcome and drops the claim.
async fn settle(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    job: Uuid,
    rows: &[LeadRow],
    outcomes: &HashMap<Uuid, RowOutcome>,
) -> Result<(), JobError> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    for row in rows {
        let (synced, crm_id, failed, code) = match outcomes.get(&row.id) {
            Some(RowOutcome::Synced { crm_id }) => {
                (Some(row.wanted_version), crm_id.clone(), None, None)
            }
            Some(RowOutcome::Failed { code }) => {
                (None, None, Some(row.wanted_version), Some(*code))
            }
            Some(RowOutcome::Retry { .. }) | None => (None, None, None, None),
        };
        sqlx::query(
            "update crm_sync_state
                set synced_version = greatest(synced_version, coalesce($4, synced_version)),
                    crm_id = coalesce($5, crm_id),
                    failed_version = coalesce($6, failed_version),
                    failure_code = coalesce($7, failure_code),
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
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Classifies a HubSpot 429 body's policy.
fn policy_of(body: &Value) -> &'static str {
    let policy = body.get("policyName").and_then(Value::as_str).unwrap_or("");
    let message = body.get("message").and_then(Value::as_str).unwrap_or("");
    match policy {
        "TEN_SECONDLY_ROLLING" => "ten_secondly_rolling",
        "DAILY" => "daily",
        _ if message.contains("secondly limit") => "secondly",
        _ => "other",
    }
}

fn header_u64(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now + chrono::TimeDelta::hours(24))
}

async fn pause(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    until: DateTime<Utc>,
    reason: &str,
) -> Result<(), JobError> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    settings::pause_crm(&mut tx, tenant, until, reason).await?;
    tx.commit().await?;
    Ok(())
}

/// A bearer token for the tenant: the private-app token, or a cached OAuth access token,
/// refreshed (once, under the connection's row lock) when it is about to expire.
async fn bearer(deps: &Deps, tenant: Uuid, conn: &CrmConnection) -> Result<String, JobError> {
    // A cached access token with more than the margin left.
    let fresh = |c: &CrmConnection| {
        c.access
            .as_ref()
            .filter(|(_, exp)| *exp - REFRESH_MARGIN > Utc::now())
            .map(|(t, _)| t.expose().to_owned())
    };
    if let CrmAuth::PrivateApp { token } = &conn.auth {
        return Ok(token.clone());
    }
    if let Some(t) = fresh(conn) {
        return Ok(t);
    }
    let mut tx = db::begin(&deps.pool, Scope::Tenant(tenant)).await?;
    let locked = settings::crm_connection(&mut tx, &deps.sealer, tenant, true)
        .await
        .map_err(crm_err)?
        .ok_or_else(|| JobError::permanent("crm_not_configured", anyhow::anyhow!("gone")))?;
    // Another job may have refreshed while we waited for the lock.
    if let Some(t) = fresh(&locked) {
        return Ok(t);
    }
    let CrmAuth::Oauth {
        client_id,
        client_secret,
        refresh_token,
    } = &locked.auth
    else {
        return Err(JobError::transient(
            "crm_auth_changed",
            anyhow::anyhow!("auth kind changed"),
        ));
    };
    let url = format!("{}/oauth/v1/token", locked.base_url);
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", client_id.as_str()),
        ("client_secret", client_secret.as_str()),
        ("refresh_token", refresh_token.as_str()),
    ];
    let res = deps.http.post(&url).form(&form).send().await;
    let count = |result: &'static str| {
        metrics::counter!(m::CRM_TOKEN_REFRESHES_TOTAL, m::label::RESULT => result).increment(1);
    };
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            count("error");
            return Err(JobError::transient(
                "crm_token_refresh_failed",
                e.without_url(),
            ));
        }
    };
    let status = res.status();
    if status.is_server_error() || status.as_u16() == 429 {
        count("error");
        return Err(JobError::transient(
            "crm_token_refresh_failed",
            anyhow::anyhow!("token endpoint answered {status}"),
        ));
    }
    if !status.is_success() {
        // invalid_grant and friends: the portal must authorize the app again.
        count("rejected");
        return Err(JobError::permanent(
            "crm_token_refresh_rejected",
            anyhow::anyhow!("token endpoint refused the refresh token ({status})"),
        ));
    }
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
        #[serde(default)]
        refresh_token: Option<String>,
        expires_in: i64,
    }
    let t: Token = res.json().await.map_err(|e| {
        count("error");
        JobError::transient("crm_token_refresh_failed", e.without_url())
    })?;
    let expires_at = Utc::now() + chrono::TimeDelta::seconds(t.expires_in.clamp(60, 86_400));
    let rotated = t
        .refresh_token
        .filter(|r| r != refresh_token)
        .map(|r| CrmAuth::Oauth {
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            refresh_token: r,
        });
    settings::store_access_token(
        &mut tx,
        &deps.sealer,
        tenant,
        &t.access_token,
        expires_at,
        rotated.as_ref(),
    )
    .await?;
    tx.commit().await?;
    count("ok");
    Ok(t.access_token)
}

/// Sends one batch and classifies the answer per input id.
async fn send(
    deps: &Deps,
    tenant: Uuid,
    conn: &CrmConnection,
    inputs: Vec<Value>,
) -> Result<HashMap<String, RowOutcome>, JobError> {
    let token = bearer(deps, tenant, conn).await?;
    let url = format!("{}/crm/v3/objects/contacts/batch/upsert", conn.base_url);
    let started = Instant::now();
    let res = deps
        .http
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "inputs": inputs }))
        .send()
        .await;
    metrics::histogram!(m::CRM_REQUEST_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            let label = if e.is_timeout() { "timeout" } else { "error" };
            metrics::counter!(m::CRM_REQUESTS_TOTAL, m::label::STATUS => label).increment(1);
            return Err(JobError::transient("crm_unavailable", e.without_url()));
        }
    };
    let status = res.status().as_u16();
    metrics::counter!(m::CRM_REQUESTS_TOTAL, m::label::STATUS => status.to_string()).increment(1);
    let headers = res.headers().clone();
    let correlation = headers
        .get("x-hubspot-correlation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    // Seen the window run out: pause before HubSpot has to refuse.
    if header_u64(&headers, "x-hubspot-ratelimit-remaining") == Some(0) && status != 429 {
        let ms =
            header_u64(&headers, "x-hubspot-ratelimit-interval-milliseconds").unwrap_or(10_000);
        metrics::counter!(m::CRM_RATE_LIMITED_TOTAL, m::label::POLICY => "window_exhausted")
            .increment(1);
        let until = Utc::now() + chrono::TimeDelta::milliseconds(ms.min(60_000) as i64);
        pause(&deps.pool, tenant, until, "window_exhausted").await?;
    }
    match status {
        200 | 201 | 207 => {
            let mut out = HashMap::new();
            for r in body
                .get("results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let crm_id = r.get("id").and_then(Value::as_str).map(str::to_owned);
                let key = r
                    .get("properties")
                    .and_then(|p| p.get(&conn.id_property))
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase);
                if let Some(k) = key {
                    out.insert(k, RowOutcome::Synced { crm_id });
                }
            }
            for e in body
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let category = e.get("category").and_then(Value::as_str).unwrap_or("");
                let outcome = match category {
                    "VALIDATION_ERROR" | "INVALID_EMAIL" | "PROPERTY_DOESNT_EXIST" => {
                        RowOutcome::Failed {
                            code: "crm_invalid_data",
                        }
                    }
                    _ => RowOutcome::Retry {
                        code: "crm_partial_failure",
                    },
                };
                for id in e
                    .pointer("/context/ids")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    out.insert(id.to_ascii_lowercase(), outcome.clone());
                }
                tracing::warn!(category, correlation_id = %correlation, "The CRM refused some records.");
            }
            if status != 207 {
                // HubSpot answers 200 only when every input was written.
                for i in &inputs {
                    if let Some(id) = i.get("id").and_then(Value::as_str) {
                        out.entry(id.to_owned())
                            .or_insert(RowOutcome::Synced { crm_id: None });
                    }
                }
            }
            Ok(out)
        }
        429 => {
            let policy = policy_of(&body);
            metrics::counter!(m::CRM_RATE_LIMITED_TOTAL, m::label::POLICY => policy).increment(1);
            let retry_after = header_u64(&headers, "retry-after").map(Duration::from_secs);
            if policy == "daily" {
                let until = next_utc_midnight(Utc::now());
                pause(&deps.pool, tenant, until, "daily").await?;
                tracing::error!(correlation_id = %correlation,
                    "The CRM's daily limit is reached: syncing pauses until it resets.");
                return Err(JobError::RateLimited {
                    code: "crm_daily_limit",
                    retry_after: (until - Utc::now())
                        .to_std()
                        .unwrap_or(Duration::from_secs(3600)),
                });
            }
            let wait = retry_after.unwrap_or(match policy {
                "secondly" => Duration::from_secs(1),
                _ => Duration::from_secs(10),
            });
            Err(JobError::RateLimited {
                code: "crm_rate_limited",
                retry_after: wait,
            })
        }
        401 | 403 => {
            tracing::error!(status, correlation_id = %correlation,
                "The CRM refused the tenant's credentials.");
            Err(JobError::permanent(
                "crm_unauthorized",
                anyhow::anyhow!("the CRM answered {status} (credentials refused)"),
            ))
        }
        400 | 409 | 422 => {
            let message = body.get("category").and_then(Value::as_str).unwrap_or("");
            tracing::error!(status, category = message, correlation_id = %correlation,
                "The CRM refused the whole batch.");
            let mut out = HashMap::new();
            for i in &inputs {
                if let Some(id) = i.get("id").and_then(Value::as_str) {
                    out.insert(
                        id.to_owned(),
                        RowOutcome::Failed {
                            code: "crm_rejected",
                        },
                    );
                }
            }
            Ok(out)
        }
        s if s >= 500 => Err(JobError::transient(
            "crm_unavailable",
            anyhow::anyhow!("the CRM answered {s} (correlation id {correlation})"),
        )),
        s => Err(JobError::transient(
            "crm_unexpected_status",
            anyhow::anyhow!("the CRM answered {s} (correlation id {correlation})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
