//! The audit trail, newest first, paged by id (the query is `leadq_jobs::ops::audit_trail`):
//!
//! - `GET /v1/audit`: a tenant reads its own (scope `admin`; the read is audited, batched:
//!   `audit.read`);
//! - `GET /v1/audit/trail`: an operator reads the platform's events, or one tenant's
//!   (`?tenant=`; audited), with the chain's last verification (permission `console`). The
//!   console's audit page is this, rendered.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use leadq_jobs::ops::audit_trail::{self, AuditPage, Filter, Trail};
use leadq_platform::apikey::scope;
use leadq_platform::audit::reads::Read;
use leadq_platform::db::Scope;
use leadq_platform::operators::permission;
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{Auth, OperatorContext};
use crate::middleware::current_correlation_id;
use crate::rejections::ApiQuery;
use crate::AppState;

/// Paging and filters: `?limit=50&before=<id>&action=lead.erase&subject=lead:<uuid>`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Only entries of this action, e.g. `lead.score`, `lead.erase`, `job.dead_letter`.
    #[param(pattern = "^[a-z0-9_.]{1,64}$")]
    action: Option<String>,
    /// Only entries about this subject, e.g. `lead:<uuid>` or `job:<uuid>`.
    #[param(pattern = r"^[\x21-\x7e]{1,200}$")]
    subject: Option<String>,
    /// Page size, 1-500 (default 50; out-of-range values are clamped).
    limit: Option<i64>,
    /// Entries older than this id (a previous page's `next_before`).
    before: Option<i64>,
}

impl Page {
    /// The filter, or 400 `invalid_query` for a field of the wrong form.
    fn filter(&self) -> Result<Filter, ApiError> {
        if !self.action.as_deref().is_none_or(audit_trail::valid_action)
            || !self.subject.as_deref().is_none_or(audit_trail::valid_name)
        {
            return Err(ApiError::InvalidQuery);
        }
        Ok(Filter {
            action: self.action.clone(),
            subject: self.subject.clone(),
            before: self.before,
            limit: self.limit.unwrap_or(50),
            ..Filter::default()
        })
    }
}

/// `GET /v1/audit`.
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "audit",
    security(("api_key" = [])),
    params(Page),
    responses((status = 200, description = "The tenant's audit entries, newest first \
        (scope `admin`).", body = AuditPage)))]
pub async fn list(
    State(app): State<AppState>,
    auth: Auth,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<AuditPage>, ApiError> {
    let principal = auth.require(scope::ADMIN)?;
    let filter = page.filter()?;
    let page = audit_trail::list(&app.pool, Scope::Tenant(principal.tenant_id), &filter).await?;
    // Reading the trail is itself a read of the tenant's data (batched, off this path).
    app.reads
        .record(Read {
            tenant_id: Some(principal.tenant_id),
            actor: principal.actor(),
            action: "audit.read",
            subject: format!("tenant:{}", principal.tenant_id),
            correlation_id: current_correlation_id(),
            details: serde_json::json!({
                "action": filter.action, "subject": filter.subject, "before": filter.before,
                "entries": page.entries.len(),
            }),
        })
        .await;
    Ok(Json(page))
}

/// The operators' filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrailQuery {
    /// One tenant's trail (slug); without it, the platform's own events.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    pub tenant: Option<String>,
    /// Only this actor, e.g. `operator:alice`.
    #[param(pattern = r"^[\x21-\x7e]{1,200}$")]
    pub actor: Option<String>,
    /// Only this action, e.g. `queue.tenant.pause`.
    #[param(pattern = "^[a-z0-9_.]{1,64}$")]
    pub action: Option<String>,
    /// At or after (RFC 3339, years 1-9999).
    pub since: Option<DateTime<Utc>>,
    /// Before (RFC 3339, years 1-9999).
    pub until: Option<DateTime<Utc>>,
    /// Entries older than this id (a previous page's `next_before`).
    pub before: Option<i64>,
    /// Page size, 1-500 (default 50; out-of-range values are clamped).
    pub limit: Option<i64>,
}

/// The trail `q` names, as `GET /v1/audit/trail` answers it (the console renders the same).
pub async fn trail_of(
    app: &AppState,
    operator: &OperatorContext,
    q: &TrailQuery,
) -> Result<Trail, ApiError> {
    operator.require(permission::CONSOLE)?;
    if q.tenant
        .as_deref()
        .is_some_and(|t| !leadq_platform::tenant::valid_slug(t))
        || !q.actor.as_deref().is_none_or(audit_trail::valid_name)
        || !q.action.as_deref().is_none_or(audit_trail::valid_action)
        || ![q.since, q.until]
            .iter()
            .flatten()
            .all(leadq_platform::db::storable_time)
    {
        return Err(ApiError::InvalidQuery);
    }
    let tenant = match &q.tenant {
        Some(slug) => Some(super::tenant_by_slug(&app.pool, slug).await?),
        None => None,
    };
    let filter = Filter {
        actor: q.actor.clone(),
        action: q.action.clone(),
        subject: None,
        since: q.since,
        until: q.until,
        before: q.before,
        limit: q.limit.unwrap_or(50),
    };
    Ok(audit_trail::operator_view(&app.pool, operator.as_actor(), tenant, &filter).await?)
}

/// `GET /v1/audit/trail`.
#[utoipa::path(get, path = "/v1/audit/trail", operation_id = "audit_trail", tag = "operations",
    security(("operator_token" = [])),
    params(TrailQuery),
    responses(
        (status = 200, description = "Entries newest first and the chain's last verification \
            (permission `console`).", body = Trail),
        (status = 404, description = "No such tenant.", body = crate::openapi::ErrorBody),
    ))]
pub async fn trail(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiQuery(q): ApiQuery<TrailQuery>,
) -> Result<Json<Trail>, ApiError> {
    trail_of(&app, &operator, &q).await.map(Json)
}
