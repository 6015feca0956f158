//! The append-only audit log.
//!
//! Entries are written in the same transaction as the change they describe, so the trail and
//! the data cannot disagree. The table refuses UPDATE and DELETE (a trigger). Entries carry ids
//! and codes, never personal data.

use uuid::Uuid;

/// One audit entry.
#[derive(Debug)]
pub struct AuditEntry<'a> {
    /// The tenant concerned (`None` for platform-level actions).
    pub tenant_id: Option<Uuid>,
    /// Who acted: `api_key:<id>`, `worker:<kind>`, `cli`, …
    pub actor: &'a str,
    /// What was done, e.g. `lead.score`.
    pub action: &'a str,
    /// On what, e.g. `lead:<external id>`.
    pub subject: &'a str,
    /// `ok` or an error code.
    pub outcome: &'a str,
    /// The request's or job's correlation id.
    pub correlation_id: &'a str,
    /// Extra structured facts (ids, codes; never PII).
    pub details: serde_json::Value,
}

/// Appends an entry.
pub async fn record<'e, E>(executor: E, e: &AuditEntry<'_>) -> Result<(), sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query(
        "insert into audit_log (tenant_id, actor, action, subject, outcome, correlation_id, details)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.tenant_id)
    .bind(e.actor)
    .bind(e.action)
    .bind(e.subject)
    .bind(e.outcome)
    .bind(e.correlation_id)
    .bind(&e.details)
    .execute(executor)
    .await?;
    Ok(())
}
