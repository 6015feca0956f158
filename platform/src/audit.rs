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

/// Who acts, for which tenant, under which correlation id: what every entry of one request,
/// job or command shares. Entries start from it ([`Auditor::entry`]), so a call site names
/// only what it did.
#[derive(Debug, Clone, Copy)]
pub struct Auditor<'a> {
    /// The tenant concerned (`None` for platform-level actions).
    pub tenant_id: Option<Uuid>,
    /// Who acts: `api_key:<id>`, `operator:<name>`, `webhook:<source>`, `system:<task>`, …
    pub actor: &'a str,
    /// The request's, job's or command's correlation id (`cli` for a CLI command).
    pub correlation_id: &'a str,
}

impl<'a> Auditor<'a> {
    /// An entry of this actor: `action` done on `subject`, outcome `ok`, no details.
    pub fn entry<'b>(&self, action: &'b str, subject: &'b str) -> AuditEntry<'b>
    where
        'a: 'b,
    {
        AuditEntry {
            tenant_id: self.tenant_id,
            actor: self.actor,
            action,
            subject,
            outcome: "ok",
            correlation_id: self.correlation_id,
            details: serde_json::json!({}),
        }
    }
}

impl<'a> AuditEntry<'a> {
    /// The outcome, when not `ok`: an error code or a reason.
    pub fn outcome(mut self, outcome: &'a str) -> Self {
        self.outcome = outcome;
        self
    }

    /// Extra structured facts (ids, codes; never PII).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Appends the entry (see [`record`]).
    pub async fn record<'e, E>(&self, executor: E) -> Result<(), sqlx::Error>
    where
        E: sqlx::PgExecutor<'e>,
    {
        record(executor, self).await
    }
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

/// The result of checking one chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    /// `tenant:<uuid>` or `platform`.
    pub scope: String,
    /// Rows checked.
    pub rows: u64,
    /// The id of the first row whose hash or link does not match, if any.
    pub first_broken_id: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Link {
    id: i64,
    prev_hash: Option<Vec<u8>>,
    hash: Vec<u8>,
    expected: Vec<u8>,
    stored_prev_of_next: Option<Vec<u8>>,
}

/// Recomputes the hash chain of `scope` (see `migrations/*_audit_hash_chain.sql`) and names
/// the first row that does not match: an edited row fails its own hash; a deleted or inserted
/// row breaks the link of the row after it.
pub async fn verify_chain(
    pool: &sqlx::PgPool,
    scope: crate::db::Scope,
) -> Result<ChainReport, sqlx::Error> {
    let mut tx = crate::db::begin(pool, scope).await?;
    let links: Vec<Link> = sqlx::query_as(
        "select id, prev_hash, hash,
                audit_row_hash(prev_hash, tenant_id, actor, action, subject, outcome,
                               correlation_id, details, at) as expected,
                lag(hash) over (order by id) as stored_prev_of_next
           from audit_log order by id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let first_broken_id = links
        .iter()
        .find(|l| l.hash != l.expected || l.prev_hash != l.stored_prev_of_next)
        .map(|l| l.id);
    Ok(ChainReport {
        scope: match scope {
            crate::db::Scope::Tenant(t) => format!("tenant:{t}"),
            crate::db::Scope::Platform => "platform".into(),
        },
        rows: links.len() as u64,
        first_broken_id,
    })
}

/// The scopes of every chain: each tenant's (by slug), then the platform's.
async fn all_scopes(pool: &sqlx::PgPool) -> Result<Vec<crate::db::Scope>, sqlx::Error> {
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("select id from tenants order by slug")
        .fetch_all(pool)
        .await?;
    let mut scopes: Vec<_> = tenants.into_iter().map(crate::db::Scope::Tenant).collect();
    scopes.push(crate::db::Scope::Platform);
    Ok(scopes)
}

/// Whether every chain of `reports` is intact, and one line saying so or naming each broken
/// chain and its first bad row (what the scheduler records and `leadq doctor` prints).
pub fn summary(reports: &[ChainReport]) -> (bool, String) {
    let broken: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            r.first_broken_id
                .map(|id| format!("{} at row {id}", r.scope))
        })
        .collect();
    if broken.is_empty() {
        let rows: u64 = reports.iter().map(|r| r.rows).sum();
        (
            true,
            format!("{} chain(s), {rows} row(s), all intact", reports.len()),
        )
    } else {
        (false, format!("broken: {}", broken.join(", ")))
    }
}

/// Verifies every chain: each tenant's, then the platform's.
pub async fn verify_all(pool: &sqlx::PgPool) -> Result<Vec<ChainReport>, sqlx::Error> {
    let mut out = Vec::new();
    for scope in all_scopes(pool).await? {
        out.push(verify_chain(pool, scope).await?);
    }
    Ok(out)
}

/// When the newest audit row of any chain was written: the audit trail's heartbeat. Rows are
/// readable only inside their own scope (row-level security), so every scope is asked.
pub async fn newest_entry(
    pool: &sqlx::PgPool,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, sqlx::Error> {
    let mut newest = None;
    for scope in all_scopes(pool).await? {
        let mut tx = crate::db::begin(pool, scope).await?;
        let at: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("select max(at) from audit_log")
                .fetch_one(&mut *tx)
                .await?;
        newest = newest.max(at);
    }
    Ok(newest)
}
