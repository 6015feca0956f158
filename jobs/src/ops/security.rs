//! Security health: the signals that say the platform's protections are still in place, not
//! only that it runs. Served as `GET /v1/health/security` (operators), published as one
//! `leadq_security_check_ok{check}` gauge per check for the alerts, and reused by
//! `leadq doctor`.
//!
//! Each check answers pass, warn, fail or skip (does not apply here) with a detail an
//! operator can act on. A detail never carries a secret: counts, ages, key ids and tenant
//! slugs only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use leadq_platform::config::Settings;
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::integrations::settings::field;
use crate::pii::Sealer;

/// A check's verdict.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", schema(as = CheckStatus))]
pub enum Status {
    /// In place.
    Pass,
    /// Needs attention soon, not broken.
    Warn,
    /// Broken: a protection is missing or cannot be shown to work.
    Fail,
    /// Does not apply to this deployment (e.g. no alert bot configured).
    Skip,
}

/// One check's result.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name, also the `check` label of the gauge.
    pub name: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found; never a secret.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
        }
    }
}

/// Every check name, in the order they are reported.
pub const CHECKS: &[&str] = &[
    "audit_heartbeat",
    "audit_verified",
    "chatwoot_secrets",
    "telegram_secrets",
    "signing_keys",
    "data_keys",
    "operator_tokens",
    "api_keys_expiring",
    "alert_channel",
];

/// API keys expiring within this are reported.
const EXPIRY_WARNING: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// How long the alert channel's `getMe` may take.
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the checks read.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// PostgreSQL.
    pub pool: &'a PgPool,
    /// Opens sealed integration secrets (are they readable with today's keys?).
    pub sealer: &'a Sealer,
    /// Keys, operator tokens, thresholds, the alert channel.
    pub settings: &'a Settings,
    /// For the alert channel's `getMe`.
    pub http: &'a reqwest::Client,
}

/// Runs every check.
pub async fn run(i: Inputs<'_>) -> Vec<Check> {
    let facts = match tenants(i.pool).await {
        Ok(t) => tenant_facts(i.pool, &t).await,
        Err(e) => Err(e),
    };
    let (keys, expiring) = match &facts {
        Ok(f) => expiring_keys(f),
        Err(_) => (unreachable("api_keys_expiring"), 0),
    };
    metrics::gauge!(m::API_KEYS_EXPIRING).set(expiring as f64);
    vec![
        audit_heartbeat(i).await,
        audit_verified(i).await,
        match &facts {
            Ok(f) => chatwoot_secrets(i, f),
            Err(_) => unreachable("chatwoot_secrets"),
        },
        match &facts {
            Ok(f) => telegram_secrets(f),
            Err(_) => unreachable("telegram_secrets"),
        },
        keyring_age(
            i,
            "signing_keys",
            "signing",
            i.settings.signing_keys.as_ref(),
        )
        .await,
        keyring_age(i, "data_keys", "data", i.settings.data_keys.as_ref()).await,
        operator_tokens(i.settings),
        keys,
        alert_channel(i).await,
    ]
}

/// Sets `leadq_security_check_ok{check}`: 0 for a failing check, 1 otherwise.
pub fn publish(checks: &[Check]) {
    for c in checks {
        let ok = if c.status == Status::Fail { 0.0 } else { 1.0 };
        metrics::gauge!(m::SECURITY_CHECK_OK, m::label::CHECK => c.name).set(ok);
    }
}

fn unreachable(name: &'static str) -> Check {
    Check::new(name, Status::Fail, "PostgreSQL did not answer")
}

/// Active tenants: (id, slug).
async fn tenants(pool: &PgPool) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("select id, slug from tenants where status = 'active' order by slug")
        .fetch_all(pool)
        .await
}

fn age(since: DateTime<Utc>) -> Duration {
    (Utc::now() - since).to_std().unwrap_or_default()
}

/// "3h 12m": whole minutes, for details.
pub fn human(d: Duration) -> String {
    let mins = d.as_secs() / 60;
    match (mins / 1440, (mins / 60) % 24, mins % 60) {
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

async fn audit_heartbeat(i: Inputs<'_>) -> Check {
    const NAME: &str = "audit_heartbeat";
    let max = i.settings.security.audit_heartbeat_max_age;
    match leadq_platform::audit::newest_entry(i.pool).await {
        Err(_) => unreachable(NAME),
        Ok(None) => Check::new(NAME, Status::Fail, "the audit trail has no entry at all"),
        Ok(Some(at)) if age(at) > max => Check::new(
            NAME,
            Status::Fail,
            format!(
                "newest audit entry is {} old (limit {}): audited actions are not being recorded",
                human(age(at)),
                human(max)
            ),
        ),
        Ok(Some(at)) => Check::new(
            NAME,
            Status::Pass,
            format!("newest audit entry {} ago", human(age(at))),
        ),
    }
}

async fn audit_verified(i: Inputs<'_>) -> Check {
    const NAME: &str = "audit_verified";
    let max = i.settings.security.audit_verify_max_age;
    match leadq_platform::checks::last(i.pool, leadq_platform::checks::AUDIT_VERIFY).await {
        Err(_) => unreachable(NAME),
        Ok(None) => Check::new(
            NAME,
            Status::Fail,
            "the audit chains were never verified (schedule audit_verify)",
        ),
        Ok(Some(r)) if !r.ok => Check::new(
            NAME,
            Status::Fail,
            format!(
                "last verification {} ago found a broken chain: {}",
                human(age(r.ran_at)),
                r.detail
            ),
        ),
        Ok(Some(r)) if age(r.ran_at) > max => Check::new(
            NAME,
            Status::Fail,
            format!(
                "last verification is {} old (limit {}); is the scheduler running?",
                human(age(r.ran_at)),
                human(max)
            ),
        ),
        Ok(Some(r)) => Check::new(
            NAME,
            Status::Pass,
            format!("verified {} ago: {}", human(age(r.ran_at)), r.detail),
        ),
    }
}

/// What the checks read of one tenant: its integration secrets as stored and how many of its
/// live API keys expire soon.
#[derive(sqlx::FromRow)]
struct TenantFacts {
    #[sqlx(rename = "tenant_id")]
    id: Uuid,
    #[sqlx(skip)]
    slug: String,
    chatwoot_account_id: Option<i64>,
    chatwoot_secret: Option<String>,
    telegram_secret_sha256: Option<Vec<u8>>,
    keys_expiring: i64,
}

/// Every tenant's facts, [`leadq_platform::audit::TENANTS_PER_STATEMENT`] tenants a statement:
/// `leadq_tenant_security_facts` reads each under its own scope (row-level security), so the
/// checks cost a round trip per few hundred tenants, not several transactions per tenant
/// (migrations/20261221000300_tenant_facts_in_one_pass.sql).
async fn tenant_facts(
    pool: &PgPool,
    tenants: &[(Uuid, String)],
) -> Result<Vec<TenantFacts>, sqlx::Error> {
    let mut out = Vec::with_capacity(tenants.len());
    for chunk in tenants.chunks(leadq_platform::audit::TENANTS_PER_STATEMENT) {
        let ids: Vec<Uuid> = chunk.iter().map(|(id, _)| *id).collect();
        // The function sets each tenant's scope in turn; the transaction runs nothing after it.
        let mut tx = db::begin(pool, Scope::Platform).await?;
        let rows: Vec<TenantFacts> = sqlx::query_as(
            "select tenant_id, chatwoot_account_id, chatwoot_secret, telegram_secret_sha256,
                    keys_expiring
               from leadq_tenant_security_facts($1, $2)",
        )
        .bind(&ids)
        .bind(EXPIRY_WARNING)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if rows.len() != chunk.len() {
            return Err(sqlx::Error::Protocol(format!(
                "{} tenants' facts for {} tenants",
                rows.len(),
                chunk.len()
            )));
        }
        for (mut row, (id, slug)) in rows.into_iter().zip(chunk) {
            if row.id != *id {
                return Err(sqlx::Error::Protocol("tenant facts out of order".into()));
            }
            row.slug = slug.clone();
            out.push(row);
        }
    }
    Ok(out)
}

/// Every tenant with a Chatwoot account has a webhook secret, and it opens with today's data
/// keys (a secret sealed with a key since dropped from the ring rejects every delivery).
fn chatwoot_secrets(i: Inputs<'_>, tenants: &[TenantFacts]) -> Check {
    const NAME: &str = "chatwoot_secrets";
    let (mut enabled, mut bad) = (0, Vec::new());
    for t in tenants {
        if t.chatwoot_account_id.is_none() {
            continue;
        }
        enabled += 1;
        match &t.chatwoot_secret {
            None => bad.push(format!("{} (no secret)", t.slug)),
            Some(s) if i.sealer.open(t.id, field::CHATWOOT_SECRET, s).is_err() => {
                bad.push(format!("{} (secret unreadable with the data keys)", t.slug))
            }
            Some(_) => {}
        }
    }
    if bad.is_empty() {
        Check::new(
            NAME,
            Status::Pass,
            format!("{enabled} tenant(s) with Chatwoot, each with its HMAC secret"),
        )
    } else {
        Check::new(
            NAME,
            Status::Fail,
            format!(
                "Chatwoot enabled without a usable secret: {}",
                bad.join(", ")
            ),
        )
    }
}

/// Telegram is enabled for a tenant by setting its secret token (only its SHA-256 is kept);
/// a stored digest of the wrong length would accept no delivery.
fn telegram_secrets(tenants: &[TenantFacts]) -> Check {
    const NAME: &str = "telegram_secrets";
    let (mut enabled, mut bad) = (0, Vec::new());
    for t in tenants {
        match &t.telegram_secret_sha256 {
            Some(d) if d.len() == 32 => enabled += 1,
            Some(_) => bad.push(t.slug.clone()),
            None => {}
        }
    }
    if bad.is_empty() {
        Check::new(
            NAME,
            Status::Pass,
            format!("{enabled} tenant(s) with Telegram, each with its secret token"),
        )
    } else {
        Check::new(
            NAME,
            Status::Fail,
            format!("Telegram secret token unusable: {}", bad.join(", ")),
        )
    }
}

async fn keyring_age(
    i: Inputs<'_>,
    name: &'static str,
    purpose: &str,
    keyring: Option<&leadq_platform::keyring::Keyring>,
) -> Check {
    let Some(keyring) = keyring else {
        return Check::new(name, Status::Fail, "no keys configured");
    };
    let max = i.settings.security.key_max_age;
    let kid = &keyring.current().kid;
    match leadq_platform::checks::sight_keys(i.pool, purpose, keyring).await {
        Err(_) => unreachable(name),
        Ok(first_seen) if age(first_seen) > max => Check::new(
            name,
            Status::Warn,
            format!(
                "current key {kid} in use for {} (rotate every {}): prepend a new key",
                human(age(first_seen)),
                human(max)
            ),
        ),
        Ok(first_seen) => Check::new(
            name,
            Status::Pass,
            format!(
                "{} key(s) loaded; current {kid}, first seen {} ago",
                keyring.kids().count(),
                human(age(first_seen))
            ),
        ),
    }
}

fn operator_tokens(settings: &Settings) -> Check {
    const NAME: &str = "operator_tokens";
    match settings.operator_tokens.len() {
        0 => Check::new(
            NAME,
            Status::Fail,
            "no operator token: on-call cannot read status, dead letters or audit",
        ),
        n => Check::new(NAME, Status::Pass, format!("{n} operator token(s)")),
    }
}

/// Active API keys expiring within 7 days: (check, count).
fn expiring_keys(tenants: &[TenantFacts]) -> (Check, usize) {
    const NAME: &str = "api_keys_expiring";
    let found: Vec<(String, usize)> = tenants
        .iter()
        .filter(|t| t.keys_expiring > 0)
        .map(|t| (t.slug.clone(), t.keys_expiring as usize))
        .collect();
    let total: usize = found.iter().map(|(_, n)| n).sum();
    let check = if total == 0 {
        Check::new(NAME, Status::Pass, "no API key expires within 7 days")
    } else {
        let who: Vec<String> = found.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        Check::new(
            NAME,
            Status::Warn,
            format!(
                "{total} API key(s) expire within 7 days ({}); rotate them",
                who.join(", ")
            ),
        )
    };
    (check, total)
}

/// The alert bot answers `getMe`. The URL holds the bot token, so no error text of the call
/// is ever reported, only the status.
async fn alert_channel(i: Inputs<'_>) -> Check {
    const NAME: &str = "alert_channel";
    let Some(c) = &i.settings.alert_channel else {
        return Check::new(
            NAME,
            Status::Skip,
            "no alert bot configured (LEADQ_ALERT_TELEGRAM_BOT_TOKEN and LEADQ_ALERT_TELEGRAM_CHAT_ID)",
        );
    };
    let url = format!("{}/bot{}/getMe", c.api_url, c.bot_token.expose());
    let answer = i.http.get(url).timeout(CHANNEL_TIMEOUT).send().await;
    let answer = match answer {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Check::new(NAME, Status::Fail, "Telegram getMe timed out")
        }
        Err(_) => return Check::new(NAME, Status::Fail, "Telegram is unreachable"),
    };
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    if status.is_success() && body["ok"] == true {
        let who = body["result"]["username"].as_str().unwrap_or("?");
        Check::new(
            NAME,
            Status::Pass,
            format!("alert bot @{who} answers getMe"),
        )
    } else {
        Check::new(
            NAME,
            Status::Fail,
            format!("Telegram getMe answered {}", status.as_u16()),
        )
    }
}
