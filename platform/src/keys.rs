//! API-key administration (operator actions from the CLI): create, list, revoke, rotate.
//!
//! Every action is audited in the key's tenant's trail with the operator as actor. Rotation
//! makes a new key with the same scopes and lets the old one live on for an overlap window, so
//! producers can switch without downtime.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::apikey::{self, scope};
use crate::audit::Auditor;
use crate::db::{self, Scope};
use crate::secret::Secret;

/// Every scope a key may carry.
pub const ALL_SCOPES: &[&str] = &[
    scope::LEADS_WRITE,
    scope::LEADS_READ,
    scope::STATUS_READ,
    scope::ADMIN,
    "webhooks",
];

/// Errors of key administration.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No such tenant slug.
    #[error("no tenant with slug {0:?}")]
    UnknownTenant(String),
    /// No such key.
    #[error("no key with id {0}")]
    UnknownKey(Uuid),
    /// A scope is not one of [`ALL_SCOPES`].
    #[error("unknown scope {0:?} (known: leads:write, leads:read, status:read, admin, webhooks)")]
    BadScope(String),
    /// A duration is malformed, or longer than [`MAX_DURATION_DAYS`].
    #[error(
        "duration {0:?} is not a whole number followed by d, h or m (e.g. 90d), of at most \
         36500d"
    )]
    BadDuration(String),
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// The longest duration [`parse_duration`] takes: a hundred years. Longer ones put the times
/// computed from them (an expiry, a dead-letter age) outside what `chrono` and PostgreSQL
/// store, and made `Utc::now() + d` panic.
pub const MAX_DURATION_DAYS: i64 = 36_500;

/// Parses `90d`, `12h`, `30m` (at most [`MAX_DURATION_DAYS`]).
pub fn parse_duration(s: &str) -> Result<Duration, KeyError> {
    let bad = || KeyError::BadDuration(s.to_owned());
    let unit = s.chars().next_back().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    let d = match unit {
        'd' => Duration::try_days(n),
        'h' => Duration::try_hours(n),
        'm' => Duration::try_minutes(n),
        _ => None,
    };
    d.filter(|d| *d <= Duration::days(MAX_DURATION_DAYS))
        .ok_or_else(bad)
}

/// Parses `a,b,c` scopes.
pub fn parse_scopes(s: &str) -> Result<Vec<String>, KeyError> {
    let scopes: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return Err(KeyError::BadScope(String::new()));
    }
    for sc in &scopes {
        if !ALL_SCOPES.contains(&sc.as_str()) {
            return Err(KeyError::BadScope(sc.clone()));
        }
    }
    Ok(scopes)
}

/// A key just made: shown once.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    /// Key id.
    pub key_id: Uuid,
    /// Tenant id.
    pub tenant_id: Uuid,
    /// The key in clear.
    #[serde(serialize_with = "expose")]
    pub api_key: Secret,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

fn expose<S: serde::Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose())
}

/// A key as listed (never the secret, never the hash).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    /// Key id.
    pub key_id: Uuid,
    /// The visible prefix (`lq_<prefix>_…`).
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last successful use (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

async fn tenant_id(pool: &PgPool, slug: &str) -> Result<Uuid, KeyError> {
    crate::tenant::id_by_slug(pool, slug)
        .await?
        .ok_or_else(|| KeyError::UnknownTenant(slug.to_owned()))
}

/// Inserts a key issued for `lifetime` (none: it never expires); returns its id, its secret
/// and its expiry.
async fn insert_key(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    scopes: &[String],
    lifetime: Option<Duration>,
) -> Result<(Uuid, Secret, Option<DateTime<Utc>>), sqlx::Error> {
    let key = apikey::generate();
    let expires_at = lifetime.map(|d| Utc::now() + d);
    // What it is issued for, kept apart from `expires_at`, which a rotation shortens.
    let lifetime = lifetime.map(|d| d.num_seconds().max(1));
    let id: Uuid = sqlx::query_scalar(
        "insert into api_keys (tenant_id, prefix, key_hash, scopes, expires_at, lifetime_secs)
         values ($1, $2, $3, $4, $5, $6) returning id",
    )
    .bind(tenant)
    .bind(&key.prefix)
    .bind(&key.hash)
    .bind(scopes)
    .bind(expires_at)
    .bind(lifetime)
    .fetch_one(&mut *tx)
    .await?;
    Ok((id, key.clear, expires_at))
}

/// The CLI operator acting on `tenant`'s keys.
fn auditor(tenant: Uuid, operator: &str) -> Auditor<'_> {
    Auditor {
        tenant_id: Some(tenant),
        actor: operator,
        correlation_id: "cli",
    }
}

/// Creates a key for the tenant `slug`.
pub async fn create(
    pool: &PgPool,
    operator: &str,
    slug: &str,
    scopes: Vec<String>,
    expires_in: Option<Duration>,
) -> Result<CreatedKey, KeyError> {
    let tenant = tenant_id(pool, slug).await?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let (key_id, clear, expires_at) = insert_key(&mut tx, tenant, &scopes, expires_in).await?;
    let subject = format!("api_key:{key_id}");
    auditor(tenant, operator)
        .entry("api_key.create", &subject)
        .details(serde_json::json!({"scopes": scopes, "expires_at": expires_at}))
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(CreatedKey {
        key_id,
        tenant_id: tenant,
        api_key: clear,
        scopes,
        expires_at,
    })
}

/// Lists the keys of the tenant `slug`.
pub async fn list(pool: &PgPool, slug: &str) -> Result<Vec<KeyInfo>, KeyError> {
    let tenant = tenant_id(pool, slug).await?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    Ok(sqlx::query_as(
        "select id as key_id, prefix, scopes, created_at, expires_at, revoked_at, last_used_at
           from api_keys where tenant_id = $1 order by created_at",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?)
}

async fn key_tenant(pool: &PgPool, key_id: Uuid) -> Result<Uuid, KeyError> {
    // The key's tenant is not known yet: look through the one-key window by id.
    let mut tx = pool.begin().await?;
    sqlx::query("select set_config('leadq.key_id', $1, true)")
        .bind(key_id.to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar("select tenant_id from api_keys where id = $1")
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(KeyError::UnknownKey(key_id))
}

/// Revokes a key at once.
pub async fn revoke(pool: &PgPool, operator: &str, key_id: Uuid) -> Result<(), KeyError> {
    let tenant = key_tenant(pool, key_id).await?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    sqlx::query("update api_keys set revoked_at = coalesce(revoked_at, now()) where id = $1")
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
    let subject = format!("api_key:{key_id}");
    auditor(tenant, operator)
        .entry("api_key.revoke", &subject)
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Makes a successor with the same scopes, valid for `expires_in` or else for as long as the
/// old key was issued for (no expiry if it had none); the old key stays valid for `overlap`.
pub async fn rotate(
    pool: &PgPool,
    operator: &str,
    key_id: Uuid,
    overlap: Duration,
    expires_in: Option<Duration>,
) -> Result<CreatedKey, KeyError> {
    let tenant = key_tenant(pool, key_id).await?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    // Locked: a revocation committed meanwhile would otherwise leave the revoked key with a
    // live successor. An expired key is not rotated either (its successor would outlive it).
    // The old key's lifetime, when it had one: the successor's unless `expires_in` says
    // otherwise (a key issued for 90 days is rotated into one for 90 days, not one that never
    // expires).
    let (scopes, lifetime): (Vec<String>, Option<f64>) = sqlx::query_as(
        "select scopes,
                coalesce(lifetime_secs::float8, extract(epoch from expires_at - created_at)::float8)
           from api_keys
          where id = $1 and revoked_at is null and (expires_at is null or expires_at > now())
          for update",
    )
    .bind(key_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(KeyError::UnknownKey(key_id))?;
    let old_until = Utc::now() + overlap;
    sqlx::query(
        "update api_keys set expires_at = least(coalesce(expires_at, $2), $2) where id = $1",
    )
    .bind(key_id)
    .bind(old_until)
    .execute(&mut *tx)
    .await?;
    let inherited = lifetime
        .filter(|secs| secs.is_finite() && *secs >= 1.0)
        .map(|secs| Duration::seconds(secs as i64));
    let (new_id, clear, expires_at) =
        insert_key(&mut tx, tenant, &scopes, expires_in.or(inherited)).await?;
    let subject = format!("api_key:{key_id}");
    auditor(tenant, operator)
        .entry("api_key.rotate", &subject)
        .details(serde_json::json!({
            "successor": new_id, "old_valid_until": old_until, "successor_expires_at": expires_at,
        }))
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(CreatedKey {
        key_id: new_id,
        tenant_id: tenant,
        api_key: clear,
        scopes,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_scopes_parse_strictly() {
        assert_eq!(parse_duration("90d").unwrap(), Duration::days(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::hours(2));
        assert_eq!(parse_duration("36500d").unwrap(), Duration::days(36_500));
        // A multi-byte last character, and lengths past what a time can hold, are refused
        // (they panicked: a split inside a character, `Duration::days` out of range).
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "5w",
            "1.5d",
            "9é",
            "é",
            "36501d",
            "200000000000d",
            "9223372036854775807m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_scopes("leads:read, admin").unwrap(),
            vec!["leads:read", "admin"]
        );
        assert!(parse_scopes("leads:delete").is_err());
        assert!(parse_scopes("").is_err());
    }
}
