//! Reading the audit trail: a tenant reads its own (`GET /v1/audit`), operators read the
//! platform's events or any one tenant's (`GET /v1/audit/trail`, the console's audit page),
//! with the chain's last verification beside it. One query for both, so a filter means the
//! same everywhere.
//!
//! Rows are visible only in their scope (row-level security): the platform's own events
//! (operator actions, tenant administration) in the platform scope, a tenant's in its own. An
//! operator's read of a tenant's trail is itself audited (`audit.view`), as any read of tenant
//! data by an operator is.

use chrono::{DateTime, Utc};
use leadq_platform::checks::{self, CheckRecord};
use leadq_platform::db::{self, Scope};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ops::deadletters::{record, Actor, OpsError};

/// Which entries: every field narrows; `before` pages (a previous page's `next_before`).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this actor, e.g. `operator:alice` or `key:abcd1234`.
    pub actor: Option<String>,
    /// Only this action, e.g. `lead.erase`.
    pub action: Option<String>,
    /// Only this subject, e.g. `lead:<uuid>`.
    pub subject: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// Entries older than this id.
    pub before: Option<i64>,
    /// Page size, 1-500.
    pub limit: i64,
}

/// Whether `a` is an action's form (`a-z`, `0-9`, `_`, `.`; 1-64 bytes).
pub fn valid_action(a: &str) -> bool {
    (1..=64).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// Whether `s` is an actor's or subject's form (printable ASCII without spaces; 1-200 bytes).
pub fn valid_name(s: &str) -> bool {
    (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// One audit entry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Entry {
    /// Its place in the trail (ids grow).
    pub id: i64,
    /// Who: `operator:<name>`, `key:<prefix>`, `worker`, ….
    pub actor: String,
    /// What, e.g. `lead.score`.
    pub action: String,
    /// On what, e.g. `lead:<uuid>`.
    pub subject: String,
    /// `ok`, `denied`, ….
    pub outcome: String,
    /// The request or job it belongs to.
    pub correlation_id: String,
    /// Action-specific details (never a secret, never personal data).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: sqlx::types::Json<serde_json::Value>,
    /// When.
    pub at: DateTime<Utc>,
    /// The row's chain link in hex: its HMAC once sealed (rows chained before keyed sealing:
    /// their SHA-256); absent for the few seconds before a sealer links it (`leadq audit
    /// verify`, docs/audit.md).
    pub hash: Option<String>,
    /// The row's place in its keyed chain, once sealed.
    pub seal_seq: Option<i64>,
}

/// A page of entries.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Serialize)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<Entry>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

/// The entries of `scope` matching `f`, newest first.
pub async fn list(pool: &PgPool, scope: Scope, f: &Filter) -> Result<AuditPage, sqlx::Error> {
    let limit = f.limit.clamp(1, 500);
    let (whose, tenant) = leadq_platform::audit::own_rows(scope);
    // The statement names only the filters given. With every filter written as optional
    // (`$4 is null or action = $4`), a connection's reusable plan could not tell which were
    // given, guessed each one to narrow the rows further, expected one row, and read every
    // entry of the tenant to sort them (test `read_plans::the_audit_trails_pages_…`). Named,
    // the scope's own entries are read in id order from `audit_log_tenant_id` (or, with an
    // action, `audit_log_tenant_action`) and the read stops at the page. At most 64 texts,
    // one reusable plan each.
    let mut sql = format!(
        "select id, actor, action, subject, outcome, correlation_id, details, at,
                encode(coalesce(mac, hash), 'hex') as hash, seal_seq
           from audit_log
          where {whose}"
    );
    let mut n = 1;
    let mut cond = |given: bool, text: &str| {
        if given {
            n += 1;
            sql.push_str(&format!(" and {text} ${n}"));
        }
    };
    cond(f.before.is_some(), "id <");
    cond(f.action.is_some(), "action =");
    cond(f.subject.is_some(), "subject =");
    cond(f.actor.is_some(), "actor =");
    cond(f.since.is_some(), "at >=");
    cond(f.until.is_some(), "at <");
    sql.push_str(&format!(" order by id desc limit ${}", n + 1));
    let mut query = sqlx::query_as::<_, Entry>(&sql).bind(tenant);
    if let Some(before) = f.before {
        query = query.bind(before);
    }
    for text in [&f.action, &f.subject, &f.actor].into_iter().flatten() {
        query = query.bind(text);
    }
    for at in [f.since, f.until].into_iter().flatten() {
        query = query.bind(at);
    }
    let mut tx = db::begin(pool, scope).await?;
    // The page walks the scope's entries in id order; with sorts allowed it read and sorted all
    // of them (`db::without_sorts`).
    db::without_sorts(&mut tx).await?;
    let entries: Vec<Entry> = query.bind(limit).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let next_before = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(AuditPage {
        entries,
        next_before,
    })
}

/// What operators see: a page of the platform's trail or of one tenant's, and the chain's
/// last verification.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Serialize)]
pub struct Trail {
    /// The entries.
    #[serde(flatten)]
    pub page: AuditPage,
    /// The scheduler's last verification of every chain (`audit_verify`); absent before it
    /// first ran.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub verification: Option<CheckRecord>,
}

/// An operator reads the trail of `tenant` (the platform's own events when `None`); a read of
/// a tenant's trail is audited as `audit.view`.
pub async fn operator_view(
    pool: &PgPool,
    who: Actor<'_>,
    tenant: Option<Uuid>,
    f: &Filter,
) -> Result<Trail, OpsError> {
    let scope = match tenant {
        Some(id) => {
            record(
                pool,
                who.actor,
                "audit.view",
                &format!("tenant:{id}"),
                who.correlation_id,
                serde_json::json!({"tenant_id": id}),
            )
            .await?;
            Scope::Tenant(id)
        }
        None => Scope::Platform,
    };
    Ok(Trail {
        page: list(pool, scope, f).await?,
        verification: checks::last(pool, checks::AUDIT_VERIFY).await?,
    })
}
