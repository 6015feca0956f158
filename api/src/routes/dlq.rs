//! Dead-letter operations for platform operators (operator token; every call audited):
//!
//! - `GET  /v1/dlq/{kind}?tenant=&reason=&older_than_secs=&newer_than_secs=&cursor=&limit=`
//!   one page, newest first, payloads scrubbed;
//! - `GET  /v1/dlq/{kind}/{job_id}` one dead letter;
//! - `POST /v1/dlq/{kind}/redrive` and `POST /v1/dlq/{kind}/purge` with
//!   `{"job_ids": [...]}` or a filter `{"tenant", "reason", "older_than_secs",
//!   "newer_than_secs"}` (a purge of everything also needs `"all": true`).

use axum::extract::State;

use crate::rejections::{ApiPath, ApiQuery};
use axum::Json;
use chrono::{TimeDelta, Utc};
use leadq_jobs::lead::FieldError;
use leadq_jobs::ops::deadletters::{self, Action, Outcome, Selection};
use leadq_queue::dlq::{Filter, Page};
use leadq_queue::DeadLetter;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{ApiJson, OperatorContext};
use crate::AppState;
use leadq_platform::operators::permission;

/// Filter fields, in the body of an action (the list takes them in its query).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct FilterParams {
    /// Tenant slug.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    pub tenant: Option<String>,
    /// Dead-letter reason, e.g. `max_attempts`.
    #[schema(pattern = "^[a-z0-9_]{1,64}$")]
    pub reason: Option<String>,
    /// Dead for at least this long.
    #[serde(default, deserialize_with = "whole_seconds")]
    #[schema(maximum = 4294967295_u32)]
    pub older_than_secs: Option<u32>,
    /// Dead for at most this long.
    #[serde(default, deserialize_with = "whole_seconds")]
    #[schema(maximum = 4294967295_u32)]
    pub newer_than_secs: Option<u32>,
}

/// A number of seconds, also written as a float with nothing after the point (`3600.0`):
/// JSON does not tell them apart, and neither does the contract's `integer`.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            .map(|f| f as u64)
    });
    whole
        .and_then(|w| u32::try_from(w).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("expected a whole number of seconds, 0-4294967295"))
}

/// Refuses filter fields of the wrong form (422 `validation_failed`), also when job ids make
/// the filter moot: the contract's patterns hold for every request.
fn check_filter(p: &FilterParams) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    if p.reason.as_deref().is_some_and(|r| !valid_reason(r)) {
        errs.push(FieldError {
            field: "reason".into(),
            code: "invalid_format",
        });
    }
    if p.tenant
        .as_deref()
        .is_some_and(|t| !leadq_platform::tenant::valid_slug(t))
    {
        errs.push(FieldError {
            field: "tenant".into(),
            code: "invalid_format",
        });
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errs))
    }
}

/// Whether `reason` is a dead-letter reason's form (a code: `a-z`, `0-9`, `_`).
fn valid_reason(reason: &str) -> bool {
    (1..=64).contains(&reason.len())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// List query.
///
/// The filter's fields are spelled out rather than flattened from [`FilterParams`]:
/// `serde_urlencoded` hands a flattened struct every value as a string, so its numbers
/// (`older_than_secs=3600`) would not parse.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Tenant slug.
    pub tenant: Option<String>,
    /// Dead-letter reason.
    pub reason: Option<String>,
    /// Dead for at least this long.
    #[param(maximum = 4294967295_u32)]
    pub older_than_secs: Option<u32>,
    /// Dead for at most this long.
    #[param(maximum = 4294967295_u32)]
    pub newer_than_secs: Option<u32>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-1000 (default 50; values outside are clamped).
    #[param(maximum = 4294967295_u32)]
    pub limit: Option<u32>,
}

impl ListParams {
    fn filter(&self) -> FilterParams {
        FilterParams {
            tenant: self.tenant.clone(),
            reason: self.reason.clone(),
            older_than_secs: self.older_than_secs,
            newer_than_secs: self.newer_than_secs,
        }
    }
}

/// Action body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ActionBody {
    /// These dead letters; with a filter, those of them it selects.
    pub job_ids: Option<Vec<Uuid>>,
    #[serde(flatten)]
    pub filter: FilterParams,
    /// Confirms a purge without any filter.
    #[serde(default)]
    pub all: bool,
}

/// The filter of `p`. A tenant named by an operator is a cross-tenant sighting
/// (`leadq_jobs::abuse`): one operator sweeping many tenants' dead letters is noticed.
async fn filter_of(
    app: &AppState,
    operator: &OperatorContext,
    p: &FilterParams,
) -> Result<Filter, ApiError> {
    check_filter(p)?;
    let tenant = match &p.tenant {
        Some(slug) => {
            let id = super::tenant_by_slug(&app.pool, slug).await?;
            app.watch
                .saw(&operator.actor, &id.to_string(), &operator.correlation_id)
                .await;
            Some(id)
        }
        None => None,
    };
    let now = Utc::now();
    Ok(Filter {
        tenant,
        reason: p.reason.clone(),
        dead_before: p
            .older_than_secs
            .map(|s| now - TimeDelta::seconds(i64::from(s))),
        dead_after: p
            .newer_than_secs
            .map(|s| now - TimeDelta::seconds(i64::from(s))),
    })
}

fn known(kind: &str) -> Result<(), ApiError> {
    if leadq_jobs::kinds::is_known(kind) {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

/// `GET /v1/dlq/{kind}`.
#[utoipa::path(get, path = "/v1/dlq/{kind}", operation_id = "list_dead_letters", tag = "operations",
    security(("operator_token" = [])),
    params(("kind" = String, Path, description = "The job kind, e.g. `lead_score`."), ListParams),
    responses(
        (status = 200, description = "One page of dead letters, newest first, payloads \
            scrubbed (permission `dlq`).", body = leadq_queue::dlq::Page),
        (status = 404, description = "No such kind, or no such tenant in the filter.",
         body = crate::openapi::ErrorBody),
    ))]
pub async fn list(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<Page>, ApiError> {
    page(&app, &operator, &kind, &q).await.map(Json)
}

/// One page, as `GET /v1/dlq/{kind}` answers it (the console renders the same).
pub async fn page(
    app: &AppState,
    operator: &OperatorContext,
    kind: &str,
    q: &ListParams,
) -> Result<Page, ApiError> {
    operator.require(permission::DLQ)?;
    known(kind)?;
    // A cursor that is not a page's `next_cursor` is a malformed query, refused before the
    // listing is audited.
    if q.cursor
        .as_deref()
        .is_some_and(|c| !leadq_queue::dlq::valid_cursor(c))
    {
        return Err(ApiError::InvalidQuery);
    }
    let filter = filter_of(app, operator, &q.filter()).await?;
    deadletters::list(
        &app.pool,
        &app.queue,
        operator.as_actor(),
        kind,
        &filter,
        q.cursor.as_deref(),
        q.limit.map_or(50, |l| l as usize),
    )
    .await
    .map_err(ApiError::from)
}

/// `GET /v1/dlq/{kind}/{job_id}`.
#[utoipa::path(get, path = "/v1/dlq/{kind}/{job_id}", operation_id = "show_dead_letter", tag = "operations",
    security(("operator_token" = [])),
    params(("kind" = String, Path, description = "The job kind, e.g. `lead_score`."), ("job_id" = Uuid, Path, description = "The dead letter's job id.")),
    responses(
        (status = 200, description = "One dead letter, payload scrubbed.",
         body = DeadLetter),
        (status = 404, description = "No such kind or dead letter.",
         body = crate::openapi::ErrorBody),
    ))]
pub async fn show(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath((kind, job_id)): ApiPath<(String, Uuid)>,
) -> Result<Json<DeadLetter>, ApiError> {
    one(&app, &operator, &kind, job_id).await.map(Json)
}

/// One dead letter, scrubbed, as `GET /v1/dlq/{kind}/{job_id}` answers it.
pub async fn one(
    app: &AppState,
    operator: &OperatorContext,
    kind: &str,
    job_id: Uuid,
) -> Result<DeadLetter, ApiError> {
    operator.require(permission::DLQ)?;
    known(kind)?;
    deadletters::show(&app.pool, &app.queue, operator.as_actor(), kind, job_id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The dead letters an action's body names, as the actions (and the console) read it.
pub async fn selection(
    app: &AppState,
    operator: &OperatorContext,
    kind: &str,
    body: ActionBody,
) -> Result<Selection, ApiError> {
    operator.require(permission::DLQ)?;
    known(kind)?;
    check_filter(&body.filter)?;
    let filter = filter_of(app, operator, &body.filter).await?;
    Ok(match body.job_ids {
        // The ids the filter also selects: a filter narrows, never widens.
        Some(ids) => Selection::Ids {
            ids,
            within: filter,
        },
        None => Selection::Matching {
            filter,
            all: body.all,
        },
    })
}

async fn act(
    app: AppState,
    operator: OperatorContext,
    kind: String,
    body: ActionBody,
    action: Action,
) -> Result<Json<Outcome>, ApiError> {
    let selection = selection(&app, &operator, &kind, body).await?;
    deadletters::act(
        &app.pool,
        &app.queue,
        operator.as_actor(),
        &kind,
        action,
        &selection,
        &mut |_, _| {},
    )
    .await
    .map(Json)
    .map_err(ApiError::from)
}

/// `POST /v1/dlq/{kind}/redrive`.
#[utoipa::path(post, path = "/v1/dlq/{kind}/redrive", operation_id = "redrive_dead_letters", tag = "operations",
    security(("operator_token" = [])),
    params(("kind" = String, Path, description = "The job kind, e.g. `lead_score`.")),
    request_body(content = ActionBody, description = "The job ids, or a filter."),
    responses(
        (status = 200, description = "What was re-driven.", body = Outcome),
        (status = 404, description = "No such kind, or no such tenant in the filter.",
         body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large.", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not `application/json`.",
         body = crate::openapi::ErrorBody),
    ))]
pub async fn redrive(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath(kind): ApiPath<String>,
    ApiJson(body): ApiJson<ActionBody>,
) -> Result<Json<Outcome>, ApiError> {
    act(app, operator, kind, body, Action::Redrive).await
}

/// `POST /v1/dlq/{kind}/purge`.
#[utoipa::path(post, path = "/v1/dlq/{kind}/purge", operation_id = "purge_dead_letters", tag = "operations",
    security(("operator_token" = [])),
    params(("kind" = String, Path, description = "The job kind, e.g. `lead_score`.")),
    request_body(content = ActionBody, description = "The job ids, or a filter (`all: true` \
        to purge without one)."),
    responses(
        (status = 200, description = "What was purged.", body = Outcome),
        (status = 404, description = "No such kind, or no such tenant in the filter.",
         body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large.", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not `application/json`.",
         body = crate::openapi::ErrorBody),
    ))]
pub async fn purge(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath(kind): ApiPath<String>,
    ApiJson(body): ApiJson<ActionBody>,
) -> Result<Json<Outcome>, ApiError> {
    act(app, operator, kind, body, Action::Purge).await
}
