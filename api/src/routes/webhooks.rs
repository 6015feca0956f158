//! `POST /v1/webhooks/chatwoot/{tenant}` and `POST /v1/webhooks/telegram/{tenant}`.
//!
//! Producers we do not control call these, with their own authentication instead of an API
//! key: an HMAC signature (Chatwoot) or a shared secret token (Telegram), configured per tenant
//! (`leadq tenant update`). The tenant comes from the path *and* that secret: never from the
//! body. Each delivery is verified, validated, deduplicated and enqueued, and answered well
//! within the producer's budget (Chatwoot waits 5 s and never retries account webhooks;
//! Telegram retries any non-2xx for a day). The work happens in the jobs.
//!
//! Every delivery is counted in `leadq_webhook_requests_total{source, outcome}`. A tenant
//! without the integration configured answers 404, like an unknown tenant.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};

use crate::rejections::ApiPath;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use leadq_jobs::integrations::settings::{self, WebhookTenant};
use leadq_jobs::integrations::{chatwoot, telegram};
use leadq_jobs::kinds;
use leadq_platform::metrics::{self as m, webhook_outcome as outcome};
use leadq_platform::telemetry;
use leadq_platform::ttl::TtlCache;
use leadq_queue::envelope::Envelope;
use leadq_queue::{NewJob, Priority};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::middleware::current_correlation_id;
use crate::AppState;

/// How long a Chatwoot delivery id is remembered.
const DELIVERY_TTL: Duration = Duration::from_secs(24 * 3600);

fn count(source: &'static str, outcome: &'static str) {
    metrics::counter!(m::WEBHOOK_REQUESTS_TOTAL,
        m::label::SOURCE => source, m::label::OUTCOME => outcome)
    .increment(1);
}

/// Counts a delivery we answered with 5xx as `failed`: the sender may not retry (Chatwoot
/// does not), so the event may be lost, and on-call must hear of it.
fn counting_failures<T>(source: &'static str, r: Result<T, ApiError>) -> Result<T, ApiError> {
    if let Err(e) = &r {
        if e.status().is_server_error() {
            count(source, outcome::FAILED);
        }
    }
    r
}

/// A delivery's body, read only once its tenant is known to take this webhook: a request for
/// an unknown tenant is answered before its body (up to the route's limit, megabytes) is read.
pub struct LaterBody(Request);

impl<S: Send + Sync> FromRequest<S> for LaterBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(req))
    }
}

impl LaterBody {
    /// The body within the route's limit, or the error (and count) for one that could not be
    /// read.
    async fn read(self, source: &'static str, app: &AppState) -> Result<Bytes, ApiError> {
        Bytes::from_request(self.0, app).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                count(source, outcome::TOO_LARGE);
                ApiError::PayloadTooLarge
            } else {
                count(source, outcome::MALFORMED);
                ApiError::MalformedJson
            }
        })
    }
}

/// A webhook's answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: the handlers build it with `json!`
pub struct WebhookAnswer {
    /// What became of the delivery.
    status: WebhookStatus,
    /// The job it made (`accepted`, and a Chatwoot `duplicate` of a known delivery).
    job_id: Option<uuid::Uuid>,
    /// Telegram callback queries only: `answerCallbackQuery`, answered in the reply.
    method: Option<String>,
    /// Telegram callback queries only: the query answered.
    callback_query_id: Option<String>,
}

/// See [`WebhookAnswer::status`].
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum WebhookStatus {
    /// Enqueued.
    Accepted,
    /// Seen before; nothing new enqueued.
    Duplicate,
    /// Not an event leadq acts on.
    Ignored,
}

/// Webhook settings by tenant slug, kept for a few seconds: a burst of deliveries (Chatwoot
/// sends one per message) then costs no database round trip per request. A change made with
/// `leadq tenant update` (a rotated secret, a suspended tenant) applies within [`TTL`].
/// Slugs that name no tenant are kept apart, as long, so that a sender still delivering for a
/// deleted tenant (or a flood of one made-up slug) costs no query per request either, and
/// cannot crowd real tenants out of their cache; a tenant created meanwhile is reached within
/// [`TTL`].
#[derive(Debug, Clone)]
pub struct TenantCache {
    known: TtlCache<String, Arc<WebhookTenant>>,
    unknown: TtlCache<String, ()>,
}

impl Default for TenantCache {
    fn default() -> Self {
        Self {
            known: TtlCache::new(TTL, CACHE_MAX),
            unknown: TtlCache::new(TTL, UNKNOWN_MAX),
        }
    }
}

/// How long a cached entry is used.
const TTL: Duration = Duration::from_secs(5);
/// Entries kept at most (only tenants that exist are cached).
const CACHE_MAX: usize = 10_000;
/// Unknown slugs kept at most.
const UNKNOWN_MAX: usize = 1_000;

async fn tenant_of(app: &AppState, slug: &str) -> Result<Arc<WebhookTenant>, ApiError> {
    // A path that cannot be a slug is no tenant: no lookup, and nothing kept for it.
    if !leadq_platform::tenant::valid_slug(slug) {
        return Err(ApiError::NotFound);
    }
    let cache = &app.webhook_tenants;
    let key = slug.to_owned();
    let t = match cache.known.get(&key) {
        Some(t) => t,
        None if cache.unknown.get(&key).is_some() => return Err(ApiError::NotFound),
        None => {
            let (reading, unknown_reading) = (cache.known.reading(), cache.unknown.reading());
            let found = settings::webhook_tenant(&app.pool, &app.sealer, slug)
                .await
                .map_err(|e| match e {
                    // A database that is down is a 503 the sender retries, not a 500.
                    settings::IntegrationError::Db(e) => ApiError::from(e),
                    other => ApiError::Internal(anyhow::Error::new(other)),
                })?;
            let Some(t) = found else {
                cache.unknown.insert(key, (), unknown_reading);
                return Err(ApiError::NotFound);
            };
            let t = Arc::new(t);
            // A tenant with no webhook configured is not kept: configuring one takes effect
            // at once.
            if t.chatwoot.is_some() || t.telegram_sha256.is_some() {
                cache.known.insert(key, t.clone(), reading);
            }
            t
        }
    };
    // From here on, the request's span and Sentry events name the tenant.
    telemetry::tag_tenant(t.tenant_id, Some(slug));
    if !t.active {
        return Err(ApiError::TenantInactive);
    }
    Ok(t)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Enqueues one job from a webhook; returns `(job_id, duplicate)`.
async fn enqueue(
    app: &AppState,
    tenant: uuid::Uuid,
    source: &'static str,
    kind: &str,
    message_id: String,
    payload: Value,
) -> Result<(uuid::Uuid, bool), ApiError> {
    let envelope = Envelope::new(tenant, format!("webhook:{source}"), kind, payload)
        .message_id(message_id)
        .correlation_id(current_correlation_id());
    let mut job = NewJob::now(envelope);
    job.priority = budget_priority(app, tenant, source).await;
    let e = app
        .queue
        .enqueue(vec![job])
        .await
        .map_err(ApiError::QueueUnavailable)?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("enqueue returned nothing")))?;
    Ok((e.job_id, e.duplicate))
}

/// The priority of a tenant's next delivery: normal within its webhook budget
/// (`LEADQ_WEBHOOK_BUDGET_PER_SEC`, apart from the ingest limit), low above it. Never a
/// refusal: Chatwoot does not retry, so a refused event would be lost; a flood of one tenant's
/// deliveries instead queues behind that tenant's own normal work (priorities order a tenant's
/// own jobs; other tenants keep their fair share whatever one tenant sends).
async fn budget_priority(app: &AppState, tenant: uuid::Uuid, source: &'static str) -> Priority {
    let edge = &app.settings.edge;
    let over = app
        .queue
        .take_budget(
            "webhook",
            &tenant.to_string(),
            edge.webhook_budget_per_sec,
            edge.webhook_budget_burst,
        )
        .await;
    match over {
        Ok(None) => Priority::Normal,
        Ok(Some(_)) => {
            metrics::counter!(m::WEBHOOK_OVER_BUDGET_TOTAL, m::label::SOURCE => source)
                .increment(1);
            Priority::Low
        }
        Err(error) => {
            tracing::warn!(error = %error, "Webhook budget unavailable; enqueueing at normal priority.");
            Priority::Normal
        }
    }
}

/// `POST /v1/webhooks/chatwoot/{tenant}`.
#[utoipa::path(post, path = "/v1/webhooks/chatwoot/{tenant}", operation_id = "chatwoot_webhook", tag = "webhooks",
    params(
        ("tenant" = String, Path, description = "The tenant's slug."),
        ("x-chatwoot-signature" = String, Header,
         description = "`sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">` under the \
            tenant's webhook secret."),
        ("x-chatwoot-timestamp" = String, Header,
         description = "Unix seconds; within the replay window."),
        ("x-chatwoot-delivery" = Option<String>, Header,
         description = "Chatwoot's delivery id (deduplication)."),
    ),
    request_body(content = Object, description = "A Chatwoot webhook event \
        (`message_created`, `conversation_status_changed`, …)."),
    responses(
        (status = 200, description = "Authenticated and well-formed: accepted, a duplicate, or \
            ignored (an event leadq does not act on). Never retried by the sender.",
         body = WebhookAnswer),
        (status = 401, description = "Missing or wrong signature (`bad_signature`), or a \
            timestamp outside the replay window (`stale_timestamp`).",
         body = crate::openapi::ErrorBody),
        (status = 403, description = "Signed for another account (`wrong_account`) or the \
            tenant is suspended.", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such tenant, or this integration is not configured \
            for it.", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large.", body = crate::openapi::ErrorBody),
        (status = 429, description = "Not taken now, deliver again after `Retry-After`: \
            Redis or PostgreSQL did not answer (`queue_unavailable`, \
            `database_unavailable`). A 429 because Chatwoot retries only a 429 or a 500.",
         body = crate::openapi::ErrorBody),
    ))]
pub async fn chatwoot(
    state: State<AppState>,
    slug: ApiPath<String>,
    headers: HeaderMap,
    body: LaterBody,
) -> Response {
    match counting_failures(
        "chatwoot",
        chatwoot_delivery(state, slug, headers, body).await,
    ) {
        Ok(answer) => answer.into_response(),
        Err(e) => retried_by_chatwoot(e),
    }
}

/// How long Chatwoot is asked to wait before it delivers again (its own retries are 3 s apart).
const CHATWOOT_RETRY_AFTER: &str = "3";

/// Chatwoot retries an agent-bot delivery only after a 429 or a 500 (docs/contracts/
/// chatwoot.md, "Delivery"), so a failure of ours that a later attempt can get past — Redis or
/// PostgreSQL unreachable — answers 429 with `Retry-After` (the body keeps its code,
/// `queue_unavailable` or `database_unavailable`, and the failure is logged and counted as
/// such): its 503 was never retried, and the event was lost.
fn retried_by_chatwoot(e: ApiError) -> Response {
    let transient = matches!(
        e,
        ApiError::QueueUnavailable(_) | ApiError::DatabaseUnavailable(_)
    );
    let mut res = e.into_response();
    if transient {
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        res.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static(CHATWOOT_RETRY_AFTER),
        );
    }
    res
}

async fn chatwoot_delivery(
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    headers: HeaderMap,
    body: LaterBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    const SRC: &str = "chatwoot";
    let t = tenant_of(&app, &slug).await?;
    let Some((account_id, secret)) = &t.chatwoot else {
        return Err(ApiError::NotFound);
    };
    let body = body.read(SRC, &app).await?;
    let now = Utc::now();
    chatwoot::verify(
        secret.expose().as_bytes(),
        header(&headers, "x-chatwoot-timestamp"),
        header(&headers, "x-chatwoot-signature"),
        &body,
        now,
    )
    .map_err(|r| match r {
        chatwoot::Rejected::BadSignature => {
            count(SRC, outcome::BAD_SIGNATURE);
            ApiError::BadSignature
        }
        chatwoot::Rejected::Stale => {
            count(SRC, outcome::STALE);
            ApiError::StaleTimestamp
        }
    })?;
    let normalized = chatwoot::normalize(&body, *account_id, now).map_err(|e| {
        tracing::warn!(error = %e, "Refusing a Chatwoot delivery.");
        match e {
            chatwoot::Malformed::NotJson(_) => {
                count(SRC, outcome::MALFORMED);
                ApiError::MalformedJson
            }
            chatwoot::Malformed::Shape(_) => {
                count(SRC, outcome::MALFORMED);
                ApiError::InvalidBody
            }
            chatwoot::Malformed::WrongAccount(_) => {
                count(SRC, outcome::WRONG_ACCOUNT);
                ApiError::WrongAccount
            }
            chatwoot::Malformed::Field(path) => {
                count(SRC, outcome::MALFORMED);
                ApiError::InvalidField(path)
            }
            chatwoot::Malformed::Unstorable(path) => {
                count(SRC, outcome::MALFORMED);
                ApiError::UnsupportedCharacter(path)
            }
        }
    })?;
    let (mut input, dedupe_key) = match normalized {
        chatwoot::Normalized::Ignored(why) => {
            count(SRC, outcome::IGNORED);
            tracing::info!(why, "Chatwoot delivery ignored.");
            return Ok((StatusCode::OK, Json(json!({"status": "ignored"}))));
        }
        chatwoot::Normalized::Event { input, dedupe_key } => (input, dedupe_key),
    };
    // The delivery id first (a resend of this very delivery), then (account, event, id) in
    // the enqueue itself (the same change delivered to several webhooks). The id is marked
    // only once its job is enqueued: marked first, a request cut off in between (Chatwoot
    // hangs up after 5 s) left it marked with nothing queued, and the retry was answered
    // `duplicate`. Two copies racing past the check meet the enqueue's own dedupe. An id too
    // long to be kept with its prefix is not used (the enqueue's dedupe still applies).
    let delivery = header(&headers, "x-chatwoot-delivery")
        .map(|d| format!("delivery:{d}"))
        .filter(|d| leadq_queue::envelope::valid_id(d));
    if let Some(d) = &delivery {
        let seen = app
            .queue
            .seen(kinds::CHATWOOT_EVENT, t.tenant_id, d)
            .await
            .map_err(ApiError::QueueUnavailable)?;
        if seen {
            count(SRC, outcome::DUPLICATE);
            return Ok((StatusCode::OK, Json(json!({"status": "duplicate"}))));
        }
    }
    chatwoot::seal(&mut input, t.tenant_id, &app.sealer);
    let payload =
        serde_json::to_value(&input).map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    let (job_id, duplicate) = enqueue(
        &app,
        t.tenant_id,
        SRC,
        kinds::CHATWOOT_EVENT,
        dedupe_key,
        payload,
    )
    .await?;
    if let Some(d) = &delivery {
        // Not marked (Redis failed just now): a resend is caught by the enqueue's dedupe.
        if let Err(error) = app
            .queue
            .mark_seen(kinds::CHATWOOT_EVENT, t.tenant_id, d, DELIVERY_TTL)
            .await
        {
            tracing::warn!(error = %error, "Could not mark a Chatwoot delivery id as seen.");
        }
    }
    if duplicate {
        count(SRC, outcome::DUPLICATE);
        return Ok((
            StatusCode::OK,
            Json(json!({"status": "duplicate", "job_id": job_id})),
        ));
    }
    count(SRC, outcome::ACCEPTED);
    tracing::info!(%job_id, event = %input.event, "Chatwoot event accepted.");
    Ok((
        StatusCode::OK,
        Json(json!({"status": "accepted", "job_id": job_id})),
    ))
}

/// `POST /v1/webhooks/telegram/{tenant}`. A callback query is answered in the reply itself
/// (`answerCallbackQuery`), so the user's client stops its spinner at once.
#[utoipa::path(post, path = "/v1/webhooks/telegram/{tenant}", operation_id = "telegram_webhook", tag = "webhooks",
    params(
        ("tenant" = String, Path, description = "The tenant's slug."),
        ("x-telegram-bot-api-secret-token" = String, Header,
         description = "The secret token set with `setWebhook`."),
    ),
    request_body(content = Object, description = "A Telegram `Update`."),
    responses(
        (status = 200, description = "Authenticated and well-formed: accepted, a duplicate, or \
            ignored; a callback query is answered in the reply (`method`, \
            `callback_query_id`).", body = WebhookAnswer),
        (status = 401, description = "Missing or wrong secret token (`bad_signature`).",
         body = crate::openapi::ErrorBody),
        (status = 403, description = "The tenant is suspended (`tenant_inactive`).",
         body = crate::openapi::ErrorBody),
        (status = 404, description = "No such tenant, or Telegram is not configured for it.",
         body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large.", body = crate::openapi::ErrorBody),
    ))]
pub async fn telegram(
    state: State<AppState>,
    slug: ApiPath<String>,
    headers: HeaderMap,
    body: LaterBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    counting_failures(
        "telegram",
        telegram_delivery(state, slug, headers, body).await,
    )
}

async fn telegram_delivery(
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    headers: HeaderMap,
    body: LaterBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    const SRC: &str = "telegram";
    let t = tenant_of(&app, &slug).await?;
    let Some(expected) = &t.telegram_sha256 else {
        return Err(ApiError::NotFound);
    };
    let body = body.read(SRC, &app).await?;
    let given = header(&headers, "x-telegram-bot-api-secret-token")
        .map(settings::telegram_token_digest)
        .unwrap_or_default();
    // Digests have a fixed length, so the comparison takes the same time for any token.
    if given.len() != expected.len() || !bool::from(given.ct_eq(expected)) {
        count(SRC, outcome::BAD_SIGNATURE);
        return Err(ApiError::BadSignature);
    }
    let normalized = telegram::normalize(&body).map_err(|e| {
        count(SRC, outcome::MALFORMED);
        match e {
            telegram::Malformed::NotJson => ApiError::MalformedJson,
            telegram::Malformed::Shape(_) => ApiError::InvalidBody,
            telegram::Malformed::Unstorable(path) => ApiError::UnsupportedCharacter(path),
        }
    })?;
    let answer = |callback: Option<String>, status: &str| {
        let mut body = json!({"status": status});
        if let Some(id) = callback {
            body["method"] = json!("answerCallbackQuery");
            body["callback_query_id"] = json!(id);
        }
        (StatusCode::OK, Json(body))
    };
    let (update_id, mut lead, callback) = match normalized {
        telegram::Normalized::Ignored {
            why,
            callback_query_id,
            ..
        } => {
            count(SRC, outcome::IGNORED);
            tracing::info!(why, "Telegram update ignored.");
            return Ok(answer(callback_query_id, "ignored"));
        }
        telegram::Normalized::Lead {
            update_id,
            lead,
            callback_query_id,
        } => (update_id, lead, callback_query_id),
    };
    if let Some(e) = lead.validate().first() {
        // Telegram would resend a refused update for a day: take it, count it, drop it.
        count(SRC, outcome::IGNORED);
        tracing::info!(field = %e.field, code = e.code, "Telegram update carries an unusable value.");
        return Ok(answer(callback, "ignored"));
    }
    app.sealer
        .seal_contact(t.tenant_id, &mut lead.email, &mut lead.phone);
    let payload =
        serde_json::to_value(&*lead).map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    let (job_id, duplicate) = enqueue(
        &app,
        t.tenant_id,
        SRC,
        kinds::LEAD_SCORE,
        format!("tg:{update_id}"),
        payload,
    )
    .await?;
    if duplicate {
        count(SRC, outcome::DUPLICATE);
        return Ok(answer(callback, "duplicate"));
    }
    count(SRC, outcome::ACCEPTED);
    tracing::info!(%job_id, "Telegram update accepted.");
    Ok(answer(callback, "accepted"))
}
