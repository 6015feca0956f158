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

/// The Telegram bot and chat that error alerts go to (`leadq-notify`), also checked with
/// `getMe` by the security health checks. Configured only when both the token and the chat
/// id are set; one without the other is a configuration error.
#[derive(Debug, Clone)]
pub struct AlertChannelSettings {
    /// `LEADQ_ALERT_TELEGRAM_BOT_TOKEN` (or `_FILE`).
    pub bot_token: Secret,
    /// `LEADQ_ALERT_TELEGRAM_API_URL`, default `https://api.telegram.org` (a self-hosted Bot
    /// API server, or a fake one in tests).
    pub api_url: String,
    /// `LEADQ_ALERT_TELEGRAM_CHAT_ID`: a chat id (negative for groups) or `@channelusername`.
    /// One chat per environment: the environment is named in every message anyway.
    pub chat_id: String,
    /// How alerts are filtered, deduplicated and batched.
    pub policy: AlertPolicySettings,
}

/// How error alerts are filtered, deduplicated, rate-limited and batched. Read whether or not
/// the channel is configured, so a typo is reported before the day it is turned on.
#[derive(Debug, Clone)]
pub struct AlertPolicySettings {
    /// `LEADQ_ALERT_MAX_TRACE_LINES` (default 15): lines of cause chain or backtrace per
    /// alert; 0 sends none.
    pub max_trace_lines: usize,
    /// `LEADQ_ALERT_IGNORED_PATHS` (comma-separated route templates or prefixes, e.g.
    /// `/healthz,/v1/status`): errors of these requests are never sent.
    pub ignored_paths: Vec<String>,
    /// `LEADQ_ALERT_IGNORED_ERRORS` (comma-separated error codes or kinds, e.g.
    /// `queue_unavailable,crm_not_configured`): never sent.
    pub ignored_errors: Vec<String>,
    /// `LEADQ_ALERT_RATE_LIMIT_MINUTES` (default 10): one immediate message per fingerprint
    /// per this window, across every process; repeats are counted into the digest.
    pub rate_limit: Duration,
    /// `LEADQ_ALERT_BATCH_WINDOW_MINUTES` (default 15): non-critical alerts are gathered
    /// into one digest per window.
    pub batch_window: Duration,
    /// `LEADQ_ALERT_STATE_TTL_HOURS` (default 24): every piece of alert state in Redis
    /// expires after this long without use.
    pub state_ttl: Duration,
}

impl Default for AlertPolicySettings {
    fn default() -> Self {
        Self {
            max_trace_lines: 15,
            ignored_paths: Vec::new(),
            ignored_errors: Vec::new(),
            rate_limit: Duration::from_secs(10 * 60),
            batch_window: Duration::from_secs(15 * 60),
            state_ttl: Duration::from_secs(24 * 3600),
        }
    }
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

fn list(r: &Reader<'_>, name: &str) -> Vec<String> {
    r.get(name)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A chat id: an integer (groups are negative) or a public `@username`.
fn valid_chat_id(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    let numeric =
        !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit());
    let username = v.strip_prefix('@').is_some_and(|u| {
        (4..=32).contains(&u.len())
            && u.starts_with(|c: char| c.is_ascii_alphabetic())
            && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    numeric || username
}

fn alert_policy(r: &mut Reader<'_>) -> AlertPolicySettings {
    let d = AlertPolicySettings::default();
    let minutes = |r: &mut Reader<'_>, name: &str, default: Duration| {
        Duration::from_secs(
            r.positive(name, default.as_secs() / 60, "a whole number of minutes")
                .saturating_mul(60),
        )
    };
    let p = AlertPolicySettings {
        max_trace_lines: r.parsed(
            "LEADQ_ALERT_MAX_TRACE_LINES",
            d.max_trace_lines,
            "a whole number",
        ),
        ignored_paths: list(r, "LEADQ_ALERT_IGNORED_PATHS"),
        ignored_errors: list(r, "LEADQ_ALERT_IGNORED_ERRORS"),
        rate_limit: minutes(r, "LEADQ_ALERT_RATE_LIMIT_MINUTES", d.rate_limit),
        batch_window: minutes(r, "LEADQ_ALERT_BATCH_WINDOW_MINUTES", d.batch_window),
        state_ttl: Duration::from_secs(
            r.positive(
                "LEADQ_ALERT_STATE_TTL_HOURS",
                24u64,
                "a whole number of hours",
            )
            .saturating_mul(3600),
        ),
    };
    if p.state_ttl < p.rate_limit.max(p.batch_window) {
        r.problems.push(
            "LEADQ_ALERT_STATE_TTL_HOURS must be at least LEADQ_ALERT_RATE_LIMIT_MINUTES and \
             LEADQ_ALERT_BATCH_WINDOW_MINUTES"
                .into(),
        );
    }
    p
}

fn alert_channel(r: &mut Reader<'_>) -> Option<AlertChannelSettings> {
    let bot_token = r.secret("LEADQ_ALERT_TELEGRAM_BOT_TOKEN", false);
    let chat_id = r.get("LEADQ_ALERT_TELEGRAM_CHAT_ID").map(str::to_owned);
    let api_url = http_url(
        r,
        "LEADQ_ALERT_TELEGRAM_API_URL",
        Some("https://api.telegram.org"),
    );
    let policy = alert_policy(r);
    if let Some(id) = chat_id.as_deref().filter(|id| !valid_chat_id(id)) {
        r.problems.push(format!(
            "LEADQ_ALERT_TELEGRAM_CHAT_ID={id:?} is not a chat id (an integer, or @channelusername)"
        ));
        return None;
    }
    match (bot_token, chat_id, api_url) {
        (Some(bot_token), Some(chat_id), Some(api_url)) => Some(AlertChannelSettings {
            bot_token,
            api_url,
            chat_id,
            policy,
        }),
        (None, None, _) | (_, _, None) => None,
        _ => {
            r.problems.push(
                "error alerts need LEADQ_ALERT_TELEGRAM_BOT_TOKEN (or _FILE) and \
                 LEADQ_ALERT_TELEGRAM_CHAT_ID together (or neither)"
                    .into(),
            );
            None
        }
    }
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
    let alert_channel = alert_channel(r);
    OnCall {
        canary,
        security,
        alert_channel,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::config::{Needs, Settings};

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, crate::config::ConfigError> {
        let mut vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.insert("REDIS_URL".into(), "redis://127.0.0.1/".into());
        let needs = Needs {
            database: false,
            redis: true,
            keys: false,
        };
        Settings::load(&vars, needs, &[])
    }

    #[test]
    fn error_alerts_are_off_unless_token_and_chat_id_are_both_set() {
        assert!(load(&[]).unwrap().alert_channel.is_none());
        for half in [
            ("LEADQ_ALERT_TELEGRAM_BOT_TOKEN", "123456:abc"),
            ("LEADQ_ALERT_TELEGRAM_CHAT_ID", "-1001234"),
        ] {
            let err = load(&[half]).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            assert!(
                err.problems[0].contains("LEADQ_ALERT_TELEGRAM_BOT_TOKEN (or _FILE) and LEADQ_ALERT_TELEGRAM_CHAT_ID together"),
                "{err}"
            );
            assert!(!err.to_string().contains("123456:abc"), "{err}");
        }
        let s = load(&[
            ("LEADQ_ALERT_TELEGRAM_BOT_TOKEN", "123456:abc"),
            ("LEADQ_ALERT_TELEGRAM_CHAT_ID", "-1001234"),
        ])
        .unwrap();
        let c = s.alert_channel.unwrap();
        assert_eq!(
            (c.chat_id.as_str(), c.api_url.as_str()),
            ("-1001234", "https://api.telegram.org")
        );
        assert_eq!(c.policy.max_trace_lines, 15);
        assert_eq!(c.policy.rate_limit, Duration::from_secs(600));
        assert_eq!(c.policy.batch_window, Duration::from_secs(900));
        assert_eq!(c.policy.state_ttl, Duration::from_secs(86_400));
    }

    #[test]
    fn alert_knobs_are_read_and_checked() {
        let s = load(&[
            ("LEADQ_ALERT_TELEGRAM_BOT_TOKEN", "123456:abc"),
            ("LEADQ_ALERT_TELEGRAM_CHAT_ID", "@leadq_alerts"),
            ("LEADQ_ALERT_MAX_TRACE_LINES", "0"),
            ("LEADQ_ALERT_IGNORED_PATHS", "/healthz, /v1/status ,"),
            ("LEADQ_ALERT_IGNORED_ERRORS", "queue_unavailable"),
            ("LEADQ_ALERT_RATE_LIMIT_MINUTES", "5"),
            ("LEADQ_ALERT_BATCH_WINDOW_MINUTES", "1"),
            ("LEADQ_ALERT_STATE_TTL_HOURS", "2"),
        ])
        .unwrap();
        let p = s.alert_channel.unwrap().policy;
        assert_eq!(p.max_trace_lines, 0);
        assert_eq!(p.ignored_paths, ["/healthz", "/v1/status"]);
        assert_eq!(p.ignored_errors, ["queue_unavailable"]);
        assert_eq!(p.rate_limit, Duration::from_secs(300));
        assert_eq!(p.batch_window, Duration::from_secs(60));
        assert_eq!(p.state_ttl, Duration::from_secs(7200));

        let err = load(&[
            ("LEADQ_ALERT_TELEGRAM_BOT_TOKEN", "123456:abc"),
            ("LEADQ_ALERT_TELEGRAM_CHAT_ID", "alerts chat"),
            ("LEADQ_ALERT_RATE_LIMIT_MINUTES", "0"),
            ("LEADQ_ALERT_BATCH_WINDOW_MINUTES", "120"),
            ("LEADQ_ALERT_STATE_TTL_HOURS", "1"),
        ])
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "LEADQ_ALERT_TELEGRAM_CHAT_ID=\"alerts chat\" is not a chat id",
            "LEADQ_ALERT_RATE_LIMIT_MINUTES must be greater than 0",
            "LEADQ_ALERT_STATE_TTL_HOURS must be at least",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
