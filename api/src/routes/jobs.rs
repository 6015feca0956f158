//! Finding one job, for platform operators (operator token, permission `console`; every
//! lookup audited as `job.view`):
//!
//! - `GET /v1/jobs/{job_id}?tenant=`: where the job is now and its runs (`tenant`, a slug,
//!   when known: it lets the runs of a job the queue no longer holds be found);
//! - `GET /v1/jobs?message_id=&tenant=`: the same by the producer's message id, which is
//!   unique within its tenant only.
//!
//! The console's "find a job" page is these, rendered.

use axum::extract::State;
use axum::Json;
use leadq_jobs::ops::lookup::{self, JobReport, Query};
use leadq_platform::operators::permission;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::OperatorContext;
use crate::rejections::{ApiPath, ApiQuery};
use crate::AppState;

/// The tenant of a job looked up by id.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantHint {
    /// The job's tenant (slug), when known.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    tenant: Option<String>,
}

/// A job by message id.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ByMessage {
    /// The producer's message id.
    #[param(pattern = r"^[\x21-\x7e]{1,200}$")]
    message_id: String,
    /// Its tenant (slug).
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    tenant: String,
}

/// Looks `query` up as both endpoints (and the console) do: 404 when nothing knows the job
/// or the named tenant does not exist.
pub async fn find(
    app: &AppState,
    operator: &OperatorContext,
    query: &Query,
) -> Result<Option<JobReport>, ApiError> {
    operator.require(permission::CONSOLE)?;
    let (tenant, message) = match query {
        Query::Job { tenant, .. } => (tenant.as_deref(), None),
        Query::Message {
            tenant, message_id, ..
        } => (Some(tenant.as_str()), Some(message_id.as_str())),
    };
    if tenant.is_some_and(|t| !leadq_platform::tenant::valid_slug(t))
        || message.is_some_and(|m| {
            !((1..=200).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_graphic()))
        })
    {
        return Err(ApiError::InvalidQuery);
    }
    match lookup::find(&app.pool, &app.queue, operator.as_actor(), query).await {
        Ok(found) => Ok(found),
        Err(leadq_jobs::ops::deadletters::OpsError::Invalid(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/jobs/{job_id}`.
#[utoipa::path(get, path = "/v1/jobs/{job_id}", operation_id = "get_job", tag = "operations",
    security(("operator_token" = [])),
    params(("job_id" = Uuid, Path, description = "The job id."), TenantHint),
    responses(
        (status = 200, description = "Where the job is and its runs (permission `console`).",
         body = JobReport),
        (status = 404, description = "Nothing knows the job, or no such tenant.",
         body = crate::openapi::ErrorBody),
    ))]
pub async fn get(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath(job_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<TenantHint>,
) -> Result<Json<JobReport>, ApiError> {
    let query = Query::Job {
        id: job_id,
        tenant: q.tenant,
    };
    find(&app, &operator, &query)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `GET /v1/jobs?message_id=&tenant=`.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "find_job_by_message", tag = "operations",
    security(("operator_token" = [])),
    params(ByMessage),
    responses(
        (status = 200, description = "Where the job is and its runs (permission `console`).",
         body = JobReport),
        (status = 404, description = "Nothing knows the message, or no such tenant.",
         body = crate::openapi::ErrorBody),
    ))]
pub async fn by_message(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiQuery(q): ApiQuery<ByMessage>,
) -> Result<Json<JobReport>, ApiError> {
    let query = Query::Message {
        message_id: q.message_id,
        tenant: q.tenant,
    };
    find(&app, &operator, &query)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}
