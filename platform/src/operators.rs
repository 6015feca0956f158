//! The registry of platform operators: who may use an operator token, and which operator
//! actions (`operator:<name>` principals in signed messages) each may cause.
//!
//! An operator is a name, a set of [`permission`]s and a disabled flag (table `operators`).
//! Changes are audited as platform events. Nothing is cached: every operator request and
//! every operator job reads the row, so disabling an operator takes effect at once.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::audit::Auditor;
use crate::db::{self, Scope};

/// The permissions an operator may hold.
pub mod permission {
    /// Dead-letter list, show, redrive and purge.
    pub const DLQ: &str = "dlq";
    /// Tenant ingest limits and quotas (`update_billing_limit`).
    pub const LIMITS: &str = "limits";
    /// API-key administration.
    pub const KEYS: &str = "keys";
    /// Tenant administration.
    pub const TENANTS: &str = "tenants";
    /// Cross-tenant views: `/v1/status`, `/v1/health/security`.
    pub const CONSOLE: &str = "console";
    /// Every permission.
    pub const ALL: &[&str] = &[DLQ, LIMITS, KEYS, TENANTS, CONSOLE];
}

/// A registered operator.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Operator {
    /// The name, as in `operator:<name>` and `LEADQ_OPERATOR_TOKENS`.
    pub name: String,
    /// What the operator may do ([`permission`]).
    pub permissions: Vec<String>,
    /// A disabled operator's tokens and messages are refused.
    pub disabled: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Operator {
    /// Whether the operator holds `permission`.
    pub fn may(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }
}

/// Errors of the registry's commands.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The name is not `[A-Za-z0-9][A-Za-z0-9-]{0,62}`.
    #[error("invalid operator name {0:?}: letters, digits and '-', at most 63 characters")]
    InvalidName(String),
    /// A permission we do not know.
    #[error("unknown permission {0:?} (known: dlq, limits, keys, tenants, console)")]
    UnknownPermission(String),
    /// `add` of a name that exists.
    #[error("operator {0:?} is already registered")]
    Exists(String),
    /// No such operator.
    #[error("no operator {0:?} is registered")]
    NotFound(String),
    /// The database failed.
    #[error("database query failed")]
    Db(#[from] sqlx::Error),
}

/// Whether `name` is a valid operator name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Parses `a,b,c` into known permissions (deduplicated, in the given order).
pub fn parse_permissions(list: &str) -> Result<Vec<String>, OperatorError> {
    let mut out: Vec<String> = Vec::new();
    for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !permission::ALL.contains(&p) {
            return Err(OperatorError::UnknownPermission(p.to_owned()));
        }
        if !out.iter().any(|have| have == p) {
            out.push(p.to_owned());
        }
    }
    Ok(out)
}

const COLUMNS: &str = "name, permissions, disabled, created_at, updated_at";

/// The operator called `name`, if registered (enabled or not).
pub async fn find(pool: &PgPool, name: &str) -> Result<Option<Operator>, sqlx::Error> {
    sqlx::query_as(&format!("select {COLUMNS} from operators where name = $1"))
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// Every operator, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<Operator>, sqlx::Error> {
    sqlx::query_as(&format!("select {COLUMNS} from operators order by name"))
        .fetch_all(pool)
        .await
}

/// Registers `name` with `permissions`, audited (`operator.add`) as done by `by`.
pub async fn add(
    pool: &PgPool,
    name: &str,
    permissions: &[String],
    by: &Auditor<'_>,
) -> Result<Operator, OperatorError> {
    if !valid_name(name) {
        return Err(OperatorError::InvalidName(name.to_owned()));
    }
    if let Some(p) = permissions
        .iter()
        .find(|p| !permission::ALL.contains(&p.as_str()))
    {
        return Err(OperatorError::UnknownPermission(p.clone()));
    }
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let added: Option<Operator> = sqlx::query_as(&format!(
        "insert into operators (name, permissions) values ($1, $2)
         on conflict (name) do nothing returning {COLUMNS}"
    ))
    .bind(name)
    .bind(permissions)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(op) = added else {
        return Err(OperatorError::Exists(name.to_owned()));
    };
    by.entry("operator.add", &format!("operator:{name}"))
        .details(serde_json::json!({ "permissions": permissions }))
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(op)
}

/// Disables (`true`) or enables (`false`) `name`, audited (`operator.disable` /
/// `operator.enable`) as done by `by`. Idempotent.
pub async fn set_disabled(
    pool: &PgPool,
    name: &str,
    disabled: bool,
    by: &Auditor<'_>,
) -> Result<Operator, OperatorError> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let changed: Option<Operator> = sqlx::query_as(&format!(
        "update operators set disabled = $2, updated_at = now() where name = $1
         returning {COLUMNS}"
    ))
    .bind(name)
    .bind(disabled)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(op) = changed else {
        return Err(OperatorError::NotFound(name.to_owned()));
    };
    let action = if disabled {
        "operator.disable"
    } else {
        "operator.enable"
    };
    by.entry(action, &format!("operator:{name}"))
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse_from_a_comma_list_and_unknown_ones_are_refused() {
        assert_eq!(
            parse_permissions("dlq, limits,dlq").unwrap(),
            vec!["dlq".to_owned(), "limits".to_owned()]
        );
        assert!(parse_permissions("").unwrap().is_empty());
        assert!(matches!(
            parse_permissions("dlq,root"),
            Err(OperatorError::UnknownPermission(p)) if p == "root"
        ));
    }

    #[test]
    fn operator_names_follow_the_token_names() {
        for ok in ["ann", "billing-bot", "On-Call2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", "a b", "a:b", "é", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
