//! Per-tenant queue controls for platform operators (operator token; every call audited):
//!
//! - `GET  /v1/queues/tenants?tenant=&after=`: every tenant's backlog, held and running
//!   jobs, cap, weight and pause per kind (permission `console`), a page of tenants by slug;
//! - `POST /v1/queues/{kind}/tenants/{slug}` with `{"action": "pause" | "resume" | "cap" |
//!   "uncap" | "weight", "value": N}` (permission `tenants`): the operations
//!   `leadq queue tenant` runs, answered with the tenant's state after the change.
//!
//! The console's tenants page is these two, rendered.

use axum::extract::State;
use axum::Json;
use leadq_jobs::ops::tenant_queue::{self, Applied, Control, TenantQueue};
use leadq_platform::operators::permission;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::{ApiJson, OperatorContext};
use crate::rejections::{ApiPath, ApiQuery};
use crate::AppState;

/// Which tenants.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantsQuery {
    /// Only this tenant (slug).
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    tenant: Option<String>,
    /// Tenants after this slug (the previous page's `next_after`).
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    after: Option<String>,
}

/// A page of tenants' standing, one row per tenant and kind.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantsPage {
    /// Sorted by tenant, then kind.
    pub rows: Vec<TenantQueue>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<String>,
}

/// The rows of `q`, as `GET /v1/queues/tenants` answers them (the console renders the same).
pub async fn tenants_page(
    app: &AppState,
    operator: &OperatorContext,
    tenant: Option<&str>,
    after: Option<&str>,
) -> Result<TenantsPage, ApiError> {
    operator.require(permission::CONSOLE)?;
    for slug in [tenant, after].into_iter().flatten() {
        if !leadq_platform::tenant::valid_slug(slug) {
            return Err(ApiError::InvalidQuery);
        }
    }
    let rows = tenant_queue::overview(&app.pool, &app.queue, operator.as_actor(), tenant, after)
        .await
        .map_err(|e| match e {
            leadq_jobs::ops::deadletters::OpsError::Invalid(_) => ApiError::NotFound,
            other => other.into(),
        })?;
    let tenants = rows
        .iter()
        .map(|r| r.tenant.as_str())
        .collect::<std::collections::BTreeSet<_>>();
    let next_after = (tenant.is_none() && tenants.len() as i64 == tenant_queue::OVERVIEW_PAGE)
        .then(|| tenants.last().map(|s| (*s).to_owned()))
        .flatten();
    Ok(TenantsPage { rows, next_after })
}

/// `GET /v1/queues/tenants`.
#[utoipa::path(get, path = "/v1/queues/tenants", operation_id = "list_tenant_queues", tag = "operations",
    security(("operator_token" = [])),
    params(TenantsQuery),
    responses(
        (status = 200, description = "Every kind's standing for a page of tenants (permission \
            `console`).", body = TenantsPage),
        (status = 404, description = "No such tenant.", body = crate::openapi::ErrorBody),
    ))]
pub async fn list(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiQuery(q): ApiQuery<TenantsQuery>,
) -> Result<Json<TenantsPage>, ApiError> {
    tenants_page(&app, &operator, q.tenant.as_deref(), q.after.as_deref())
        .await
        .map(Json)
}

/// What to change.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ControlAction {
    /// Hold the tenant's jobs of the kind (running ones finish).
    Pause,
    /// Let them run again.
    Resume,
    /// At most `value` of its jobs at once across all workers (1 or more).
    Cap,
    /// Remove the cap.
    Uncap,
    /// Its share of the workers, `value` 0.01-1000 (default 1).
    Weight,
}

/// A change to one tenant's controls of one kind.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    /// The change.
    pub action: ControlAction,
    /// The cap or weight.
    #[schema(minimum = 0.01, maximum = 4294967295_u32)]
    pub value: Option<f64>,
}

impl ControlBody {
    /// The control, or why the body does not name one.
    pub fn control(&self) -> Result<Control, ApiError> {
        let invalid = |code: &'static str| {
            ApiError::Validation(vec![leadq_jobs::lead::FieldError {
                field: "value".into(),
                code,
            }])
        };
        // The contract's bounds hold whatever the action, even one that ignores the value.
        if self
            .value
            .is_some_and(|v| !(v.is_finite() && (0.01..=f64::from(u32::MAX)).contains(&v)))
        {
            return Err(invalid("out_of_range"));
        }
        Ok(match (self.action, self.value) {
            (ControlAction::Pause, _) => Control::Pause,
            (ControlAction::Resume, _) => Control::Resume,
            (ControlAction::Uncap, _) => Control::Cap(None),
            (ControlAction::Cap, Some(v))
                if v.fract() == 0.0 && v >= 1.0 && v <= f64::from(u32::MAX) =>
            {
                Control::Cap(Some(v as u32))
            }
            (ControlAction::Weight, Some(v)) if v.is_finite() && (0.01..=1000.0).contains(&v) => {
                Control::Weight(v)
            }
            (ControlAction::Cap | ControlAction::Weight, None) => return Err(invalid("required")),
            (ControlAction::Cap | ControlAction::Weight, Some(_)) => {
                return Err(invalid("out_of_range"))
            }
        })
    }
}

/// Applies `control`, as `POST /v1/queues/{kind}/tenants/{slug}` does (and the console).
pub async fn apply(
    app: &AppState,
    operator: &OperatorContext,
    kind: &str,
    slug: &str,
    control: Control,
) -> Result<Applied, ApiError> {
    operator.require(permission::TENANTS)?;
    if !leadq_jobs::kinds::is_known(kind) || !leadq_platform::tenant::valid_slug(slug) {
        return Err(ApiError::NotFound);
    }
    tenant_queue::apply(
        &app.pool,
        &app.queue,
        operator.as_actor(),
        slug,
        kind,
        control,
    )
    .await
    .map_err(|e| match e {
        leadq_jobs::ops::deadletters::OpsError::Invalid(m) if m.starts_with("no tenant") => {
            ApiError::NotFound
        }
        other => other.into(),
    })
}

/// `POST /v1/queues/{kind}/tenants/{slug}`.
#[utoipa::path(post, path = "/v1/queues/{kind}/tenants/{slug}", operation_id = "control_tenant_queue", tag = "operations",
    security(("operator_token" = [])),
    params(("kind" = String, Path, description = "The job kind, e.g. `lead_score`."),
           ("slug" = String, Path, description = "The tenant's slug.")),
    request_body(content = ControlBody, description = "The change."),
    responses(
        (status = 200, description = "The tenant's state after the change (permission \
            `tenants`).", body = Applied),
        (status = 404, description = "No such kind or tenant.", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large.", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not `application/json`.", body = crate::openapi::ErrorBody),
    ))]
pub async fn control(
    State(app): State<AppState>,
    operator: OperatorContext,
    ApiPath((kind, slug)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ControlBody>,
) -> Result<Json<Applied>, ApiError> {
    let control = body.control()?;
    apply(&app, &operator, &kind, &slug, control)
        .await
        .map(Json)
}
