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
use leadq_jobs::ops::deadletters::{self, Action, Outcome, Selection};
use leadq_queue::dlq::{Filter, Page};
use leadq_queue::DeadLetter;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{ApiJson, OperatorContext};
use crate::AppState;
use leadq_platform::operators::permission;

/// Filter fields, in the query string (list) or the body (actions).
#[derive(Debug, Default, Deserialize)]
pub struct FilterParams {
    /// Tenant slug.
    tenant: Option<String>,
    /// Dead-letter reason.
    reason: Option<String>,
    /// Dead for at least this long.
    older_than_secs: Option<u32>,
    /// Dead for at most this long.
    newer_than_secs: Option<u32>,
}

/// List query.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    #[serde(flatten)]
    filter: FilterParams,
    /// From a previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1-1000 (default 50).
    limit: Option<usize>,
}

/// Action body.
#[derive(Debug, Deserialize)]
pub struct ActionBody {
    /// These dead letters (instead of a filter).
    job_ids: Option<Vec<Uuid>>,
    #[serde(flatten)]
    filter: FilterParams,
    /// Confirms a purge without any filter.
    #[serde(default)]
    all: bool,
}

/// The filter of `p`. A tenant named by an operator is a cross-tenant sighting
/// (`leadq_jobs::abuse`): one operator sweeping many tenants' dead letters is noticed.
async fn filter_of(
    app: &AppState,
    operator: &OperatorContext,
    p: &FilterParams,
) -> Result<Filter, ApiError> {
    let tenant = match &p.tenant {
        Some(slug) => {
            let id = deadletters::tenant_by_slug(&app.pool, slug)
                .await
                .map_err(|_| ApiError::NotFound)?;
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
pub async fn list(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<Page>, ApiError> {
    operator.require(permission::DLQ)?;
    known(&kind)?;
    let filter = filter_of(&app, &operator, &q.filter).await?;
    deadletters::list(
        &app.pool,
        &app.queue,
        operator.as_actor(),
        &kind,
        &filter,
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await
    .map(Json)
    .map_err(ApiError::from)
}

/// `GET /v1/dlq/{kind}/{job_id}`.
pub async fn show(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath((kind, job_id)): ApiPath<(String, Uuid)>,
) -> Result<Json<DeadLetter>, ApiError> {
    operator.require(permission::DLQ)?;
    known(&kind)?;
    deadletters::show(&app.pool, &app.queue, operator.as_actor(), &kind, job_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

async fn act(
    app: AppState,
    operator: OperatorContext,
    kind: String,
    body: ActionBody,
    action: Action,
) -> Result<Json<Outcome>, ApiError> {
    operator.require(permission::DLQ)?;
    known(&kind)?;
    let selection = match body.job_ids {
        Some(ids) => Selection::Ids(ids),
        None => Selection::Matching {
            filter: filter_of(&app, &operator, &body.filter).await?,
            all: body.all,
        },
    };
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
pub async fn redrive(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath(kind): ApiPath<String>,
    ApiJson(body): ApiJson<ActionBody>,
) -> Result<Json<Outcome>, ApiError> {
    act(app, operator, kind, body, Action::Redrive).await
}

/// `POST /v1/dlq/{kind}/purge`.
pub async fn purge(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath(kind): ApiPath<String>,
    ApiJson(body): ApiJson<ActionBody>,
) -> Result<Json<Outcome>, ApiError> {
    act(app, operator, kind, body, Action::Purge).await
}
