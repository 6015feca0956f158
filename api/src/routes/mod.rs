//! The routes, one module per resource.

pub mod audit;
pub mod dlq;
pub mod jobs;
pub mod leads;
pub mod queues;
pub mod security;
pub mod status;
pub mod tenant;
pub mod webhooks;

/// The id of the tenant an operator named by `slug`: 404 `not_found` when no tenant has it; a
/// database that fails is what it is (503 when it is down), never a missing tenant.
pub async fn tenant_by_slug(
    pool: &sqlx::PgPool,
    slug: &str,
) -> Result<uuid::Uuid, crate::error::ApiError> {
    use leadq_jobs::ops::deadletters::{self, OpsError};
    deadletters::tenant_by_slug(pool, slug)
        .await
        .map_err(|e| match e {
            OpsError::Invalid(_) => crate::error::ApiError::NotFound,
            other => other.into(),
        })
}
