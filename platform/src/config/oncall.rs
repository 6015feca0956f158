//! Settings of the on-call side: the synthetic canary, the security health checks and the
//! alert channel they test. Read with the rest of [`super::Settings`], so a problem here is
//! reported with every other one.

use std::time::Duration;

use crate::secret::Secret;

use super::Reader;

/// The synthetic canary: a lead posted for a dedicated tenant through the public API, then
/// read back until it is scored (`leadq_jobs::ops::canary`). Off unless all three of
/// `LEADQ_CANARY_TENANT`, `LEADQ_CANARY_API_URL` and `LEADQ_CANARY_API_KEY` are set.
#[derive(Debug, Clone)]
pub struct CanarySettings {
    /// The canary tenant's slug. Its jobs are left out of per-tenant metrics.
    pub tenant: String,
    /// The public API's base URL, as producers reach it (e.g. `https://leadq.example.com`).
    pub api_url: String,
    /// An API key of the canary tenant with the `leads:write` and `leads:read` scopes.
    pub api_key: Secret,
    /// How long a run may take, post to scored, before it counts as failed.
    pub timeout: Duration,
}

/// Thresholds of the security health checks (`GET /v1/health/security`, `leadq doctor`).
#[derive(Debug, Clone)]
pub struct SecurityHealthSettings {
    /// The newest audit row must be younger than this (`LEADQ_AUDIT_HEARTBEAT_MAX_AGE_SECS`,
    /// default 6 h): an older one means the audit trail stopped being written.
    pub audit_heartbeat_max_age: Duration,
    /// The scheduler's last `audit_verify` must be younger than this
    /// (`LEADQ_AUDIT_VERIFY_MAX_AGE_SECS`, default 26 h: a daily run and some slack).
    pub audit_verify_max_age: Duration,
    /// The current signing and data keys must be younger than this (`LEADQ_KEY_MAX_AGE_DAYS`,
    /// default 90), counted from when leadq first saw them.
    pub key_max_age: Duration,
}

/// The Telegram bot that carries alerts, checked with `getMe` by the security health checks.
#[derive(Debug, Clone)]
pub struct AlertChannelSettings {
    /// `LEADQ_ALERT_TELEGRAM_BOT_TOKEN` (or `_FILE`).
    pub bot_token: Secret,
    /// `LEADQ_ALERT_TELEGRAM_API_URL`, default `https://api.telegram.org`.
    pub api_url: String,
}

/// What [`read`] returns.
pub(super) struct OnCall {
    pub canary: Option<CanarySettings>,
    pub security: SecurityHealthSettings,
    pub alert_channel: Option<AlertChannelSettings>,
}

fn http_url(r: &mut Reader<'_>, name: &str, default: Option<&str>) -> Option<String> {
    let v = r.get(name).or(default)?.trim_end_matches('/').to_owned();
    if !(v.starts_with("http://") || v.starts_with("https://")) {
        r.problems
            .push(format!("{name} must start with http:// or https://"));
        return None;
    }
    Some(v)
}

pub(super) fn read(r: &mut Reader<'_>) -> OnCall {
    let tenant = r.get("LEADQ_CANARY_TENANT").map(str::to_owned);
    let api_url = http_url(r, "LEADQ_CANARY_API_URL", None);
    let api_key = r.secret("LEADQ_CANARY_API_KEY", false);
    let timeout = r.secs("LEADQ_CANARY_TIMEOUT_SECS", Duration::from_secs(30));
    let canary = match (tenant, api_url, api_key) {
        (Some(tenant), Some(api_url), Some(api_key)) => Some(CanarySettings {
            tenant,
            api_url,
            api_key,
            timeout,
        }),
        (None, None, None) => None,
        _ => {
            r.problems.push(
                "the canary needs LEADQ_CANARY_TENANT, LEADQ_CANARY_API_URL and \
                 LEADQ_CANARY_API_KEY together (or none of them)"
                    .into(),
            );
            None
        }
    };
    let security = SecurityHealthSettings {
        audit_heartbeat_max_age: r.secs(
            "LEADQ_AUDIT_HEARTBEAT_MAX_AGE_SECS",
            Duration::from_secs(6 * 3600),
        ),
        audit_verify_max_age: r.secs(
            "LEADQ_AUDIT_VERIFY_MAX_AGE_SECS",
            Duration::from_secs(26 * 3600),
        ),
        key_max_age: Duration::from_secs(
            r.positive("LEADQ_KEY_MAX_AGE_DAYS", 90u64, "a whole number of days")
                .saturating_mul(86_400),
        ),
    };
    let bot_token = r.secret("LEADQ_ALERT_TELEGRAM_BOT_TOKEN", false);
    let telegram_api = http_url(
        r,
        "LEADQ_ALERT_TELEGRAM_API_URL",
        Some("https://api.telegram.org"),
    );
    let alert_channel = match (bot_token, telegram_api) {
        (Some(bot_token), Some(api_url)) => Some(AlertChannelSettings { bot_token, api_url }),
        _ => None,
    };
    OnCall {
        canary,
        security,
        alert_channel,
    }
}
