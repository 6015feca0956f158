//! `GET /v1/tenant/overview`: a tenant's view of its own jobs (API key with `status:read`):
//! per kind its backlog and controls, its newest dead letters (scrubbed) and its recent runs.
//! Never another tenant's: the key names the tenant. The console's tenant page is this,
//! rendered.

use axum::extract::State;
use axum::Json;
use leadq_jobs::ops::tenant_view::{self, Reader, TenantOverview};
use leadq_platform::apikey::scope;

use crate::error::ApiError;
use crate::extract::Auth;
use crate::middleware::current_correlation_id;
use crate::AppState;

/// `GET /v1/tenant/overview`.
#[utoipa::path(get, path = "/v1/tenant/overview", operation_id = "tenant_overview", tag = "status",
    security(("api_key" = [])),
    responses((status = 200, description = "The tenant's queues, dead letters and recent runs \
        (scope `status:read`).", body = TenantOverview)))]
pub async fn overview(
    State(app): State<AppState>,
    auth: Auth,
) -> Result<Json<TenantOverview>, ApiError> {
    let p = auth.require(scope::STATUS_READ)?;
    let (actor, correlation_id) = (p.actor(), current_correlation_id());
    let who = leadq_jobs::ops::deadletters::Actor {
        actor: &actor,
        correlation_id: &correlation_id,
    };
    Ok(Json(
        tenant_view::overview(
            &app.pool,
            &app.queue,
            Reader::Tenant(who),
            p.tenant_id,
            &p.tenant_slug,
        )
        .await?,
    ))
}
