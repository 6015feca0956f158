//! The HubSpot side of a `crm_sync` run: the access token (a private-app token, or OAuth
//! refreshed before it expires, never on a 401), the batch upsert call and how each answer is
//! read (200, 207, 429 by policy, 401/403, 5xx), and the tenant-wide pause a daily limit or an
//! exhausted window starts.

use super::*;
use leadq_platform::telemetry::trace;
use tracing::Instrument;

/// Classifies a HubSpot 429 body's policy.
pub(super) fn policy_of(body: &Value) -> &'static str {
    let policy = body.get("policyName").and_then(Value::as_str).unwrap_or("");
    let message = body.get("message").and_then(Value::as_str).unwrap_or("");
    match policy {
        "TEN_SECONDLY_ROLLING" => "ten_secondly_rolling",
        "DAILY" => "daily",
        _ if message.contains("secondly limit") => "secondly",
        _ => "other",
    }
}

pub(super) fn header_u64(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The longest wait a `Retry-After` may ask for: HubSpot's rolling windows are seconds long
/// (its daily limit is handled by policy, not by this header), and a wait read from a header
/// must not park a job for days on one odd answer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// HubSpot's `Retry-After` (seconds), at most [`MAX_RETRY_AFTER`].
pub(super) fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    header_u64(h, "retry-after").map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// The most of a HubSpot answer read: a batch upsert's answer for 100 contacts is tens of
/// kilobytes; a body larger than this (a misbehaving proxy, a stream that never ends) is not
/// read into the worker's memory but taken as unreadable (`Value::Null`).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// A HubSpot answer's JSON body, read up to [`MAX_ANSWER_BYTES`]; `Value::Null` when it is
/// larger, cut off, or not JSON.
pub(super) async fn json_answer(mut res: reqwest::Response) -> Value {
    if res
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Value::Null;
    }
    let mut body = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ANSWER_BYTES => {
                body.extend_from_slice(&chunk)
            }
            Ok(None) => break,
            Ok(Some(_)) | Err(_) => return Value::Null,
        }
    }
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// Whether `t` can be sent as a bearer token and kept: printable ASCII without spaces (a
/// header value), 1-4,096 bytes. A token endpoint's answer is checked with it before its
/// tokens replace the stored ones.
fn usable_token(t: &str) -> bool {
    (1..=4096).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic())
}

/// A HubSpot object id as results name it (digits today): printable ASCII, 1-64 bytes. Any
/// other value is not kept (the record is still synced; an erasure then finds it by e-mail).
fn usable_crm_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

pub(super) fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now + chrono::TimeDelta::hours(24))
}

pub(super) async fn pause(
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
pub(super) async fn bearer(
    deps: &Deps,
    tenant: Uuid,
    conn: &CrmConnection,
) -> Result<String, JobError> {
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
    let span = client_span("POST", "/oauth/v1/token");
    let res = traced(deps.http.post(&url), &span)
        .form(&form)
        .send()
        .instrument(span.clone())
        .await;
    record_status(&span, &res);
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
    let t: Token = match serde_json::from_value(json_answer(res).await) {
        Ok(t) => t,
        Err(e) => {
            count("error");
            return Err(JobError::transient("crm_token_refresh_failed", e));
        }
    };
    // An access token that cannot be sent would fail every call for its lifetime; an empty or
    // odd refresh token would replace the one that works. Neither is kept.
    if !usable_token(&t.access_token) {
        count("error");
        return Err(JobError::transient(
            "crm_token_refresh_failed",
            anyhow::anyhow!("the token endpoint answered an unusable access token"),
        ));
    }
    let expires_at = Utc::now() + chrono::TimeDelta::seconds(t.expires_in.clamp(60, 86_400));
    let rotated = t
        .refresh_token
        .filter(|r| usable_token(r) && r != refresh_token)
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

/// The client span of one call to HubSpot (`POST /crm/v3/…`): the path template only, never
/// the URL (the base URL is a tenant's setting, the query could hold anything).
fn client_span(method: &'static str, path: &'static str) -> tracing::Span {
    tracing::info_span!("hubspot",
        otel.name = %format_args!("{method} {path}"),
        otel.kind = "client",
        http.request.method = method,
        url.template = path,
        peer.service = "hubspot",
        http.response.status_code = tracing::field::Empty,
    )
}

/// `req` carrying the W3C trace context of `span`, so HubSpot (or a proxy) can join the trace.
fn traced(mut req: reqwest::RequestBuilder, span: &tracing::Span) -> reqwest::RequestBuilder {
    for (k, v) in trace::headers_of(span) {
        req = req.header(k, v);
    }
    req
}

fn record_status(span: &tracing::Span, res: &Result<reqwest::Response, reqwest::Error>) {
    if let Ok(r) = res {
        span.record("http.response.status_code", r.status().as_u16());
    }
}

/// Counts one CRM call by `status`, and per tenant (bounded label; the status class, or
/// `error` when no answer came) in a counter of its own, so the status counter keeps the
/// series created at zero that its alerts rely on.
async fn count_request(deps: &Deps, tenant: Uuid, status: String) {
    let class = match status.parse::<u16>() {
        Ok(code) => format!("{}xx", code / 100),
        Err(_) => "error".to_owned(),
    };
    metrics::counter!(m::CRM_REQUESTS_TOTAL, m::label::STATUS => status).increment(1);
    if let Some(tenant) = deps.tenants.label(tenant).await {
        metrics::counter!(m::TENANT_CRM_REQUESTS_TOTAL, m::label::TENANT => tenant,
            m::label::STATUS_CLASS => class)
        .increment(1);
    }
}

/// Calls one batch may make while it looks for the inputs HubSpot refuses (see [`send`]).
const SPLIT_CALLS: usize = 16;

/// Sends one batch and classifies the answer per input id. A batch HubSpot refuses whole
/// (400, 409, 422: one input's invalid email, a custom id another contact already holds) is
/// split in halves and each half sent again, down to single inputs, so that only the inputs
/// refused on their own fail: refused whole, every lead of the batch was failed for good
/// (`crm_rejected`) for one bad neighbour. The search makes at most [`SPLIT_CALLS`] calls (one
/// bad input of 100 takes 15): what it has not reached by then fails as refused, as a batch
/// refused for a reason all its inputs share (a property the portal lacks) would anyway. A
/// call failing part-way (429, 5xx, a timeout) keeps what earlier calls settled and leaves the
/// rest to be retried.
pub(super) async fn send(
    deps: &Deps,
    tenant: Uuid,
    conn: &CrmConnection,
    inputs: Vec<Value>,
) -> Result<HashMap<String, RowOutcome>, JobError> {
    let mut out = HashMap::with_capacity(inputs.len());
    let mut groups = vec![inputs];
    let mut calls = 0;
    while let Some(group) = groups.pop() {
        if calls == SPLIT_CALLS {
            out.extend(refused(conn, &group));
            continue;
        }
        calls += 1;
        match send_once(deps, tenant, conn, group.clone()).await {
            Ok((_, true)) if group.len() > 1 => {
                let mut first = group;
                let second = first.split_off(first.len() / 2);
                groups.push(second);
                groups.push(first);
            }
            Ok((answer, _)) => out.extend(answer),
            Err(e) if out.is_empty() => return Err(e),
            Err(e) => {
                let code = e.code();
                for g in std::iter::once(group).chain(groups.drain(..)) {
                    for id in g.iter().filter_map(|i| i.get("id").and_then(Value::as_str)) {
                        out.insert(
                            record_key(&conn.id_property, id),
                            RowOutcome::Retry { code },
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Every input of `inputs` as refused by the CRM.
fn refused(conn: &CrmConnection, inputs: &[Value]) -> HashMap<String, RowOutcome> {
    inputs
        .iter()
        .filter_map(|i| i.get("id").and_then(Value::as_str))
        .map(|id| {
            (
                record_key(&conn.id_property, id),
                RowOutcome::Failed {
                    code: "crm_rejected",
                },
            )
        })
        .collect()
}

/// One call: the answer per input id, and whether HubSpot refused the batch whole.
async fn send_once(
    deps: &Deps,
    tenant: Uuid,
    conn: &CrmConnection,
    inputs: Vec<Value>,
) -> Result<(HashMap<String, RowOutcome>, bool), JobError> {
    let token = bearer(deps, tenant, conn).await?;
    let url = format!("{}/crm/v3/objects/contacts/batch/upsert", conn.base_url);
    let started = Instant::now();
    let span = client_span("POST", "/crm/v3/objects/contacts/batch/upsert");
    let res = traced(deps.http.post(&url), &span)
        .bearer_auth(token)
        .json(&serde_json::json!({ "inputs": inputs }))
        .send()
        .instrument(span.clone())
        .await;
    record_status(&span, &res);
    metrics::histogram!(m::CRM_REQUEST_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            let label = if e.is_timeout() { "timeout" } else { "error" };
            count_request(deps, tenant, label.to_owned()).await;
            return Err(JobError::transient("crm_unavailable", e.without_url()));
        }
    };
    let status = res.status().as_u16();
    count_request(deps, tenant, status.to_string()).await;
    let headers = res.headers().clone();
    let correlation = headers
        .get("x-hubspot-correlation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = json_answer(res).await;
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
                let crm_id = r
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| usable_crm_id(id))
                    .map(str::to_owned);
                let key = r
                    .get("properties")
                    .and_then(|p| p.get(&conn.id_property))
                    .and_then(Value::as_str)
                    .map(|k| record_key(&conn.id_property, k));
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
                    out.insert(record_key(&conn.id_property, id), outcome.clone());
                }
                tracing::warn!(category, correlation_id = %correlation, "The CRM refused some records.");
            }
            if status != 207 {
                // HubSpot answers 200 only when every input was written.
                for i in &inputs {
                    if let Some(id) = i.get("id").and_then(Value::as_str) {
                        out.entry(record_key(&conn.id_property, id))
                            .or_insert(RowOutcome::Synced { crm_id: None });
                    }
                }
            }
            Ok((out, false))
        }
        429 => {
            let policy = policy_of(&body);
            metrics::counter!(m::CRM_RATE_LIMITED_TOTAL, m::label::POLICY => policy).increment(1);
            let retry_after = retry_after(&headers);
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
            // A 429 that names no policy HubSpot documents and asks for no wait (a proxy's
            // page, a new policy) is retried like any transient failure, on the kind's
            // attempts: snoozed, it was asked again every ten seconds for ever, never
            // dead-lettered and never alerted on as failing.
            if policy == "other" && retry_after.is_none() {
                return Err(JobError::transient(
                    "crm_rate_limited",
                    anyhow::anyhow!("the CRM answered 429 without a known policy or a wait"),
                ));
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
            let category = body.get("category").and_then(Value::as_str).unwrap_or("");
            if inputs.len() > 1 {
                // `send` splits it to find the inputs refused; those are the errors.
                tracing::warn!(status, category, correlation_id = %correlation,
                    inputs = inputs.len(), "The CRM refused a batch whole; splitting it.");
            } else {
                tracing::error!(status, category, correlation_id = %correlation,
                    "The CRM refused a record.");
            }
            Ok((refused(conn, &inputs), true))
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
