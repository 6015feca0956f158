//! `GET /v1/audit`: a tenant reads its own audit trail, newest first, paged by id.

use axum::extract::State;

use crate::rejections::ApiQuery;
use axum::Json;
use chrono::{DateTime, Utc};
use leadq_platform::apikey::scope;
use leadq_platform::db::{self, Scope};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::Auth;
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

/// One audit entry.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Entry {
    id: i64,
    actor: String,
    action: String,
    subject: String,
    outcome: String,
    correlation_id: String,
    #[schema(value_type = Object)]
    details: sqlx::types::Json<serde_json::Value>,
    at: DateTime<Utc>,
    /// The row's chain link in hex: its HMAC once sealed (rows chained before keyed sealing:
    /// their SHA-256); absent for the few seconds before a sealer links it (`leadq audit
    /// verify`, docs/audit.md).
    hash: Option<String>,
    /// The row's place in its keyed chain, once sealed.
    seal_seq: Option<i64>,
}

/// A page of entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    entries: Vec<Entry>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    next_before: Option<i64>,
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
    let action_ok = |a: &str| {
        (1..=64).contains(&a.len())
            && a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
    };
    let subject_ok =
        |s: &str| (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
    if !page.action.as_deref().is_none_or(action_ok)
        || !page.subject.as_deref().is_none_or(subject_ok)
    {
        return Err(ApiError::InvalidQuery);
    }
    let limit = page.limit.unwrap_or(50).clamp(1, 500);
    let entries: Vec<Entry> = sqlx::query_as(
        "select id, actor, action, subject, outcome, correlation_id, details, at,
                encode(coalesce(mac, hash), 'hex') as hash, seal_seq
           from audit_log
          where tenant_id = $1 and ($2::bigint is null or id < $2)
            and ($4::text is null or action = $4) and ($5::text is null or subject = $5)
          order by id desc limit $3",
    )
    .bind(principal.tenant_id)
    .bind(page.before)
    .bind(limit)
    .bind(&page.action)
    .bind(&page.subject)
    .fetch_all(&mut *db::begin(&app.pool, Scope::Tenant(principal.tenant_id)).await?)
    .await?;
    let next_before = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_before,
    }))
}
