//! Tenants and the principals that act for them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::apikey;
use crate::audit::Auditor;
use crate::secret::Secret;

/// Errors of tenant administration and authentication.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The slug is taken.
    #[error("a tenant with slug {0:?} already exists")]
    Exists(String),
    /// The slug is malformed.
    #[error(
        "slug {0:?} must be 2-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    BadSlug(String),
    /// No tenant has this slug.
    #[error("no tenant with slug {0:?}")]
    Unknown(String),
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// A tenant just created, with its first API key in clear (shown once).
#[derive(Debug, Serialize)]
pub struct CreatedTenant {
    /// Tenant id.
    pub tenant_id: Uuid,
    /// Tenant slug.
    pub slug: String,
    /// The first API key, in clear.
    #[serde(serialize_with = "expose")]
    pub api_key: Secret,
    /// Its id (not secret): the actor of what is done with it is `api_key:<key_id>`.
    pub key_id: Uuid,
    /// Its scopes.
    pub scopes: Vec<String>,
}

fn expose<S: serde::Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose())
}

/// Whether `slug` has a tenant slug's form: 2-63 characters of `a-z`, `0-9` and `-`, starting
/// with a letter or digit.
pub fn valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    (2..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Creates a tenant and its first API key (default scopes) in one transaction, audited.
pub async fn create(pool: &PgPool, slug: &str, actor: &str) -> Result<CreatedTenant, TenantError> {
    if !valid_slug(slug) {
        return Err(TenantError::BadSlug(slug.to_owned()));
    }
    let mut tx = pool.begin().await?;
    let tenant_id: Uuid =
        match sqlx::query_scalar("insert into tenants (slug) values ($1) returning id")
            .bind(slug)
            .fetch_one(&mut *tx)
            .await
        {
            Ok(id) => id,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(TenantError::Exists(slug.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
    // Everything below is the new tenant's (row-level security).
    sqlx::query("select set_config('leadq.tenant_id', $1, true)")
        .bind(tenant_id.to_string())
        .execute(&mut *tx)
        .await?;
    let key = apikey::generate();
    let scopes: Vec<String> = apikey::scope::DEFAULT
        .iter()
        .map(|s| s.to_string())
        .collect();
    let key_id: Uuid = sqlx::query_scalar(
        "insert into api_keys (tenant_id, prefix, key_hash, scopes) values ($1, $2, $3, $4) returning id",
    )
    .bind(tenant_id)
    .bind(&key.prefix)
    .bind(&key.hash)
    .bind(&scopes)
    .fetch_one(&mut *tx)
    .await?;
    Auditor {
        tenant_id: Some(tenant_id),
        actor,
        correlation_id: "cli",
    }
    .entry("tenant.create", &format!("tenant:{tenant_id}"))
    .details(serde_json::json!({"slug": slug, "first_key_id": key_id}))
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CreatedTenant {
        tenant_id,
        slug: slug.to_owned(),
        api_key: key.clear,
        key_id,
        scopes,
    })
}

/// The id of the tenant `slug`, as operators name tenants; `None` when there is none.
pub async fn id_by_slug(pool: &PgPool, slug: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("select id from tenants where slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await
}

/// Sets how the tenant `slug` runs job `kind`: `enabled`, `shadow` (run without side effects,
/// record the would-be outcome) or `disabled` (refused as unauthorized). Audited.
pub async fn set_kind_mode(
    pool: &PgPool,
    operator: &str,
    slug: &str,
    kind: &str,
    mode: &str,
) -> Result<Uuid, TenantError> {
    let tenant_id = id_by_slug(pool, slug)
        .await?
        .ok_or_else(|| TenantError::Unknown(slug.to_owned()))?;
    let mut tx = crate::db::begin(pool, crate::db::Scope::Tenant(tenant_id)).await?;
    sqlx::query(
        "insert into tenant_job_kinds (tenant_id, kind, mode) values ($1, $2, $3)
         on conflict (tenant_id, kind) do update set mode = excluded.mode, updated_at = now()",
    )
    .bind(tenant_id)
    .bind(kind)
    .bind(mode)
    .execute(&mut *tx)
    .await?;
    Auditor {
        tenant_id: Some(tenant_id),
        actor: operator,
        correlation_id: "cli",
    }
    .entry("tenant.kind_mode", &format!("kind:{kind}"))
    .details(serde_json::json!({"mode": mode}))
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(tenant_id)
}

/// An authenticated API key and the tenant it acts for.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The tenant's slug.
    pub tenant_slug: String,
    /// The key's id; the actor of everything done with it is `api_key:<id>`.
    pub key_id: Uuid,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When the key expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// The actor string written to messages and the audit log.
    pub fn actor(&self) -> String {
        format!("api_key:{}", self.key_id)
    }

    /// Whether the key carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Not shaped like a key, unknown, or wrong.
    Invalid,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
    /// Its tenant is suspended.
    TenantInactive,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    tenant_id: Uuid,
    slug: String,
    tenant_status: String,
    key_hash: Vec<u8>,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Authenticates a presented API key.
pub async fn authenticate(
    pool: &PgPool,
    presented: &str,
) -> Result<Result<Principal, AuthFailure>, sqlx::Error> {
    let Some(prefix) = apikey::prefix_of(presented) else {
        // Same work as a wrong key, so the two cannot be told apart by timing.
        apikey::verify(presented, None);
        return Ok(Err(AuthFailure::Invalid));
    };
    let mut tx = crate::db::begin_key_lookup(pool, prefix).await?;
    let row: Option<KeyRow> = sqlx::query_as(
        "select k.id, k.tenant_id, t.slug, t.status as tenant_status, k.key_hash, k.scopes,
                k.expires_at, k.revoked_at
           from api_keys k join tenants t on t.id = k.tenant_id
          where k.prefix = $1",
    )
    .bind(prefix)
    .fetch_optional(&mut *tx)
    .await?;
    if !apikey::verify(presented, row.as_ref().map(|r| r.key_hash.as_slice())) {
        return Ok(Err(AuthFailure::Invalid));
    }
    let Some(row) = row else {
        return Ok(Err(AuthFailure::Invalid));
    };
    if row.revoked_at.is_some() {
        return Ok(Err(AuthFailure::Revoked));
    }
    if row.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Ok(Err(AuthFailure::Expired));
    }
    if row.tenant_status != "active" {
        return Ok(Err(AuthFailure::TenantInactive));
    }
    // Cheap: at most one write per key per minute, in the key's own tenant scope.
    sqlx::query("select set_config('leadq.tenant_id', $1, true)")
        .bind(row.tenant_id.to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "update api_keys set last_used_at = now()
          where id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')",
    )
    .bind(row.id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(Principal {
        tenant_id: row.tenant_id,
        tenant_slug: row.slug,
        key_id: row.id,
        scopes: row.scopes,
        expires_at: row.expires_at,
    }))
}

/// The principal of API key `key_id` of `tenant` if the key may still be used (not revoked,
/// not expired, its tenant active): a session begun with a key ends when the key does.
pub async fn principal_of_key(
    pool: &PgPool,
    tenant: Uuid,
    key_id: Uuid,
) -> Result<Option<Principal>, sqlx::Error> {
    let mut tx = crate::db::begin(pool, crate::db::Scope::Tenant(tenant)).await?;
    let row: Option<(String, Vec<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select t.slug, k.scopes, k.expires_at
           from api_keys k join tenants t on t.id = k.tenant_id
          where k.id = $1 and k.tenant_id = $2 and k.revoked_at is null
            and (k.expires_at is null or k.expires_at > now()) and t.status = 'active'",
    )
    .bind(key_id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|(tenant_slug, scopes, expires_at)| Principal {
        tenant_id: tenant,
        tenant_slug,
        key_id,
        scopes,
        expires_at,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_checked() {
        for ok in ["demo", "acme-2", "a1"] {
            assert!(super::valid_slug(ok), "{ok}");
        }
        for bad in ["", "a", "-x", "Acme", "a b", "a_b"] {
            assert!(!super::valid_slug(bad), "{bad}");
        }
    }
}
