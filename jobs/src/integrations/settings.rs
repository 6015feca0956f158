//! A tenant's integration settings: its Chatwoot account and webhook secret, its Telegram bot's
//! secret token, its CRM connection and its scoring rules.
//!
//! Secrets are handled so that nothing readable is at rest: the Chatwoot secret is an HMAC key
//! and must be recovered, so it is sealed ([`crate::pii::Sealer`], bound to the tenant and the
//! field); the Telegram secret token is only ever compared, so only its SHA-256 is kept; CRM
//! credentials are sealed JSON. Changes are audited with the names of what changed, never
//! the values.

use std::collections::BTreeMap;

use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use leadq_platform::secret::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::lead::scoring::Rules;
use crate::pii::Sealer;

/// Sealed-field names (part of the seal's associated data: never change them).
pub(crate) mod field {
    pub(crate) const CHATWOOT_SECRET: &str = "chatwoot_secret";
    pub(crate) const CRM_CREDENTIALS: &str = "crm_credentials";
    pub(crate) const CRM_ACCESS_TOKEN: &str = "crm_access_token";
}

/// What a webhook endpoint needs to know about the tenant in its path.
#[derive(Debug, Clone)]
pub struct WebhookTenant {
    /// The tenant.
    pub tenant_id: Uuid,
    /// Whether it is active.
    pub active: bool,
    /// Its Chatwoot account id and webhook secret, when both are configured.
    pub chatwoot: Option<(i64, Secret)>,
    /// SHA-256 of its Telegram bot's secret token, when configured.
    pub telegram_sha256: Option<Vec<u8>>,
}

/// Errors of reading or changing integration settings.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    /// No tenant has this slug.
    #[error("no tenant with slug {0:?}")]
    UnknownTenant(String),
    /// A setting is invalid (the message names it, never its value).
    #[error("{0}")]
    Invalid(String),
    /// A stored secret cannot be opened with the configured data keys.
    #[error("a stored secret cannot be opened: {0}")]
    Unreadable(String),
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// The tenant `slug`'s webhook settings; `None` if there is no such tenant.
pub async fn webhook_tenant(
    pool: &PgPool,
    sealer: &Sealer,
    slug: &str,
) -> Result<Option<WebhookTenant>, IntegrationError> {
    let Some((tenant_id, status)): Option<(Uuid, String)> =
        sqlx::query_as("select id, status from tenants where slug = $1")
            .bind(slug)
            .fetch_optional(pool)
            .await?
    else {
        return Ok(None);
    };
    type Row = (Option<i64>, Option<String>, Option<Vec<u8>>);
    let row: Option<Row> = sqlx::query_as(
        "select chatwoot_account_id, chatwoot_secret, telegram_secret_sha256
           from tenant_integrations where tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(&mut *db::begin(pool, Scope::Tenant(tenant_id)).await?)
    .await?;
    let (account, sealed, telegram_sha256) = row.unwrap_or((None, None, None));
    let chatwoot = match (account, sealed) {
        (Some(a), Some(s)) => {
            let secret = sealer
                .open(tenant_id, field::CHATWOOT_SECRET, &s)
                .map_err(|e| IntegrationError::Unreadable(e.to_string()))?;
            Some((a, Secret::new(secret)))
        }
        _ => None,
    };
    Ok(Some(WebhookTenant {
        tenant_id,
        active: status == "active",
        chatwoot,
        telegram_sha256,
    }))
}

/// SHA-256 of a Telegram secret token, as stored.
pub fn telegram_token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// How leadq authenticates to a tenant's CRM.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CrmAuth {
    /// A HubSpot private-app (static) token: `Authorization: Bearer pat-…`.
    PrivateApp {
        /// The token.
        token: String,
    },
    /// OAuth 2.0 with the refresh-token grant.
    Oauth {
        /// The app's client id.
        client_id: String,
        /// The app's client secret.
        client_secret: String,
        /// The portal's refresh token.
        refresh_token: String,
    },
}

impl std::fmt::Debug for CrmAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PrivateApp { .. } => f.write_str("PrivateApp([redacted])"),
            Self::Oauth { client_id, .. } => f
                .debug_struct("Oauth")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

impl CrmAuth {
    fn kind(&self) -> &'static str {
        match self {
            Self::PrivateApp { .. } => "private_app",
            Self::Oauth { .. } => "oauth",
        }
    }

    fn validate(&self) -> Result<(), IntegrationError> {
        let ok =
            |s: &str| !s.is_empty() && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_graphic());
        let good = match self {
            Self::PrivateApp { token } => ok(token),
            Self::Oauth {
                client_id,
                client_secret,
                refresh_token,
            } => ok(client_id) && ok(client_secret) && ok(refresh_token),
        };
        if good {
            Ok(())
        } else {
            Err(IntegrationError::Invalid(
                "CRM credentials must be 1-1024 printable characters without spaces".into(),
            ))
        }
    }
}

/// A CRM connection to set.
#[derive(Debug, Clone)]
pub struct CrmSettings {
    /// Base URL of the CRM API (`https://api.hubapi.com`; a sandbox or a test server).
    pub base_url: String,
    /// How to authenticate.
    pub auth: CrmAuth,
    /// The unique property upserts are keyed by (default `email`).
    pub id_property: Option<String>,
    /// Leads per batch call, 1-100 (default 100).
    pub batch_size: Option<u16>,
}

/// Changes to a tenant's integrations; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    /// The Chatwoot account whose webhooks the tenant's endpoint accepts.
    pub chatwoot_account_id: Option<i64>,
    /// The Chatwoot webhook secret.
    pub chatwoot_secret: Option<Secret>,
    /// The Telegram bot's `secret_token`.
    pub telegram_secret: Option<Secret>,
    /// The CRM connection.
    pub crm: Option<CrmSettings>,
    /// Scoring weights to set (rule → maximum points).
    pub weights: BTreeMap<String, u8>,
    /// Hot (qualified) threshold.
    pub hot_threshold: Option<u8>,
    /// Warm threshold.
    pub warm_threshold: Option<u8>,
}

fn valid_base_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && u.len() <= 300
            && !u.chars().any(|c| c.is_whitespace() || c.is_control())
            && !r.contains('@')
            && !r.contains('?')
    })
}

fn valid_telegram_token(t: &str) -> bool {
    (1..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Applies `update` to the tenant `slug`, in one audited transaction. Returns the names of the
/// settings changed.
pub async fn update(
    pool: &PgPool,
    sealer: &Sealer,
    slug: &str,
    update: &TenantUpdate,
    actor: &str,
) -> Result<Vec<&'static str>, IntegrationError> {
    // Check everything first: one message per run, nothing half-applied.
    let mut problems = Vec::new();
    if update.chatwoot_account_id.is_some_and(|a| a <= 0) {
        problems.push("chatwoot account id must be a positive integer".to_owned());
    }
    if let Some(s) = &update.chatwoot_secret {
        if s.expose().is_empty() || s.expose().len() > 256 {
            problems.push("chatwoot secret must be 1-256 bytes".to_owned());
        }
    }
    if let Some(t) = &update.telegram_secret {
        if !valid_telegram_token(t.expose()) {
            problems.push(
                "telegram secret token must be 1-256 characters of A-Z a-z 0-9 _ -".to_owned(),
            );
        }
    }
    if let Some(crm) = &update.crm {
        if !valid_base_url(&crm.base_url) {
            problems.push(
                "crm base url must be an http(s) URL without credentials or query".to_owned(),
            );
        }
        if let Err(e) = crm.auth.validate() {
            problems.push(e.to_string());
        }
        if crm.id_property.as_deref().is_some_and(|p| {
            p.is_empty()
                || p.len() > 100
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }) {
            problems
                .push("crm id property must be a HubSpot property name (a-z, 0-9, _)".to_owned());
        }
        if crm.batch_size.is_some_and(|b| !(1..=100).contains(&b)) {
            problems.push("crm batch size must be 1-100".to_owned());
        }
    }
    let tenant_id: Uuid = sqlx::query_scalar("select id from tenants where slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| IntegrationError::UnknownTenant(slug.to_owned()))?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant_id)).await?;
    let scoring = !update.weights.is_empty()
        || update.hot_threshold.is_some()
        || update.warm_threshold.is_some();
    let mut rules = Rules::load(&mut tx, tenant_id).await?;
    if scoring {
        rules.weights.extend(update.weights.clone());
        if let Some(h) = update.hot_threshold {
            rules.hot_threshold = h;
        }
        if let Some(w) = update.warm_threshold {
            rules.warm_threshold = w;
        }
        if let Err(e) = rules.validate() {
            problems.push(e.to_string());
        }
    }
    if !problems.is_empty() {
        return Err(IntegrationError::Invalid(problems.join("; ")));
    }
    let mut changed = Vec::new();
    if update.chatwoot_account_id.is_some()
        || update.chatwoot_secret.is_some()
        || update.telegram_secret.is_some()
    {
        sqlx::query(
            "insert into tenant_integrations
                 (tenant_id, chatwoot_account_id, chatwoot_secret, telegram_secret_sha256)
             values ($1, $2, $3, $4)
             on conflict (tenant_id) do update set
                 chatwoot_account_id = coalesce(excluded.chatwoot_account_id,
                                                tenant_integrations.chatwoot_account_id),
                 chatwoot_secret = coalesce(excluded.chatwoot_secret,
                                            tenant_integrations.chatwoot_secret),
                 telegram_secret_sha256 = coalesce(excluded.telegram_secret_sha256,
                                                   tenant_integrations.telegram_secret_sha256),
                 updated_at = now()",
        )
        .bind(tenant_id)
        .bind(update.chatwoot_account_id)
        .bind(
            update
                .chatwoot_secret
                .as_ref()
                .map(|s| sealer.seal(tenant_id, field::CHATWOOT_SECRET, s.expose())),
        )
        .bind(
            update
                .telegram_secret
                .as_ref()
                .map(|t| telegram_token_digest(t.expose())),
        )
        .execute(&mut *tx)
        .await?;
        for (set, name) in [
            (update.chatwoot_account_id.is_some(), "chatwoot_account_id"),
            (update.chatwoot_secret.is_some(), "chatwoot_secret"),
            (update.telegram_secret.is_some(), "telegram_secret"),
        ] {
            if set {
                changed.push(name);
            }
        }
    }
    if let Some(crm) = &update.crm {
        let creds = serde_json::to_string(&crm.auth)
            .map_err(|e| IntegrationError::Invalid(e.to_string()))?;
        sqlx::query(
            "insert into crm_connections
                 (tenant_id, base_url, id_property, batch_size, auth_kind, credentials)
             values ($1, $2, coalesce($3, 'email'), coalesce($4, 100), $5, $6)
             on conflict (tenant_id) do update set
                 base_url = excluded.base_url, id_property = excluded.id_property,
                 batch_size = excluded.batch_size, auth_kind = excluded.auth_kind,
                 credentials = excluded.credentials, access_token = null,
                 access_expires_at = null, paused_until = null, pause_reason = null,
                 updated_at = now()",
        )
        .bind(tenant_id)
        .bind(crm.base_url.trim_end_matches('/'))
        .bind(&crm.id_property)
        .bind(crm.batch_size.map(i32::from))
        .bind(crm.auth.kind())
        .bind(sealer.seal(tenant_id, field::CRM_CREDENTIALS, &creds))
        .execute(&mut *tx)
        .await?;
        changed.push("crm");
    }
    if scoring {
        sqlx::query(
            "insert into scoring_rules (tenant_id, weights, hot_threshold, warm_threshold)
             values ($1, $2, $3, $4)
             on conflict (tenant_id) do update set weights = excluded.weights,
                 hot_threshold = excluded.hot_threshold,
                 warm_threshold = excluded.warm_threshold, updated_at = now()",
        )
        .bind(tenant_id)
        .bind(sqlx::types::Json(&rules.weights))
        .bind(i32::from(rules.hot_threshold))
        .bind(i32::from(rules.warm_threshold))
        .execute(&mut *tx)
        .await?;
        changed.push("scoring");
    }
    Auditor {
        tenant_id: Some(tenant_id),
        actor,
        correlation_id: "cli",
    }
    .entry("tenant.update", &format!("tenant:{tenant_id}"))
    .details(serde_json::json!({ "changed": changed }))
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(changed)
}

/// A tenant's CRM connection, secrets opened.
#[derive(Debug, Clone)]
pub struct CrmConnection {
    /// Base URL, without a trailing slash.
    pub base_url: String,
    /// Upsert key property.
    pub id_property: String,
    /// Leads per call.
    pub batch_size: i64,
    /// Credentials.
    pub auth: CrmAuth,
    /// Cached OAuth access token and its expiry.
    pub access: Option<(Secret, chrono::DateTime<chrono::Utc>)>,
    /// Calls wait until then.
    pub paused_until: Option<chrono::DateTime<chrono::Utc>>,
}

type ConnectionRow = (
    String,
    String,
    i32,
    String,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// The tenant's CRM connection (`None`: not configured), read in `conn`'s transaction.
/// `for_update` locks the row (to refresh the OAuth token once, not once per job).
pub async fn crm_connection(
    conn: &mut sqlx::PgConnection,
    sealer: &Sealer,
    tenant: Uuid,
    for_update: bool,
) -> Result<Option<CrmConnection>, IntegrationError> {
    let sql = format!(
        "select base_url, id_property, batch_size, credentials, access_token, access_expires_at,
                paused_until
           from crm_connections where tenant_id = $1{}",
        if for_update { " for update" } else { "" }
    );
    let row: Option<ConnectionRow> = sqlx::query_as(&sql)
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    let Some((base_url, id_property, batch_size, creds, access, expires, paused_until)) = row
    else {
        return Ok(None);
    };
    let open = |f: &str, v: &str| {
        sealer
            .open(tenant, f, v)
            .map_err(|e| IntegrationError::Unreadable(e.to_string()))
    };
    let auth: CrmAuth = serde_json::from_str(&open(field::CRM_CREDENTIALS, &creds)?)
        .map_err(|e| IntegrationError::Unreadable(e.to_string()))?;
    let access = match (access, expires) {
        (Some(t), Some(at)) => Some((Secret::new(open(field::CRM_ACCESS_TOKEN, &t)?), at)),
        _ => None,
    };
    Ok(Some(CrmConnection {
        base_url,
        id_property,
        batch_size: i64::from(batch_size),
        auth,
        access,
        paused_until,
    }))
}

/// Stores a fresh OAuth access token (sealed) and, if the CRM rotated it, the refresh token.
pub async fn store_access_token(
    conn: &mut sqlx::PgConnection,
    sealer: &Sealer,
    tenant: Uuid,
    token: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
    rotated: Option<&CrmAuth>,
) -> Result<(), sqlx::Error> {
    let creds = rotated
        .and_then(|a| serde_json::to_string(a).ok())
        .map(|c| sealer.seal(tenant, field::CRM_CREDENTIALS, &c));
    sqlx::query(
        "update crm_connections set access_token = $2, access_expires_at = $3,
                credentials = coalesce($4, credentials), updated_at = now()
          where tenant_id = $1",
    )
    .bind(tenant)
    .bind(sealer.seal(tenant, field::CRM_ACCESS_TOKEN, token))
    .bind(expires_at)
    .bind(creds)
    .execute(conn)
    .await?;
    Ok(())
}

/// Pauses the tenant's CRM calls until `until` (a daily limit, an exhausted window).
pub async fn pause_crm(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    until: chrono::DateTime<chrono::Utc>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update crm_connections set paused_until = greatest(coalesce(paused_until, $2), $2),
                pause_reason = $3, updated_at = now()
          where tenant_id = $1",
    )
    .bind(tenant)
    .bind(until)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}
