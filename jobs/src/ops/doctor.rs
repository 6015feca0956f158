//! `leadq doctor`: the release-readiness checklist as code. Each check says pass, warn, fail
//! or skip (does not apply yet, e.g. no canary configured) with a detail an operator can act
//! on; any failure makes the command exit non-zero, so a deploy pipeline can gate on it.
//!
//! The checks go from the ground up: configuration, PostgreSQL (reachable, a role that cannot
//! bypass row-level security, every migration applied, no index left invalid), Redis
//! (reachable, no eviction, persistence), keys and operator tokens, the audit chains, live
//! workers for every kind, a recent green canary, and optionally Prometheus (rules loaded,
//! nothing firing) and Alertmanager (a receiver configured). A dependency that is down fails its
//! own check and every check that needs it, each saying why.

use std::time::Duration;

use leadq_platform::config::Settings;
use leadq_queue::probe::ServerProbe;
use leadq_queue::Queue;
use serde::Serialize;
use sqlx::PgPool;

use super::security::{human, Check, Status};
use crate::kinds;

/// How long each dependency may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What to check beyond the process's own configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The canary must have passed within this long (when a canary is configured).
    pub canary_max_age: Duration,
    /// Prometheus base URL: rule files loaded, no alert firing but the watchdog.
    pub prometheus: Option<String>,
    /// Alertmanager base URL: a receiver other than a null one configured.
    pub alertmanager: Option<String>,
}

/// The whole checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `pass` when nothing fails (warnings allowed), else `fail`.
    pub status: Status,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

fn fail(name: &'static str, detail: impl Into<String>) -> Check {
    check(name, Status::Fail, detail)
}

/// A configuration that did not load: one failed check listing every problem.
pub fn config_failed(problems: &[String]) -> Report {
    Report {
        status: Status::Fail,
        checks: vec![fail("config", problems.join("; "))],
    }
}

/// Runs every check against the stores `settings` names.
pub async fn run(settings: &Settings, opts: &Options, http: &reqwest::Client) -> Report {
    let mut checks = vec![check("config", Status::Pass, "every setting is valid")];
    let pool = match tokio::time::timeout(
        TIMEOUT,
        leadq_platform::db::connect(settings.database_url(), 2),
    )
    .await
    {
        Ok(Ok(p)) => Some(p),
        _ => None,
    };
    checks.push(match &pool {
        Some(_) => check("postgres", Status::Pass, "reachable"),
        None => fail("postgres", "PostgreSQL is unreachable"),
    });
    checks.push(match &pool {
        Some(p) => role(p).await,
        None => fail("postgres_role", "not checked: PostgreSQL is unreachable"),
    });
    checks.push(match &pool {
        Some(p) => migrations(p).await,
        None => fail("migrations", "not checked: PostgreSQL is unreachable"),
    });
    checks.push(match &pool {
        Some(p) => indexes(p).await,
        None => fail("indexes", "not checked: PostgreSQL is unreachable"),
    });
    checks.extend(redis(settings).await);
    checks.push(keys(settings));
    checks.push(match settings.operator_tokens.len() {
        0 => fail("operator_tokens", "LEADQ_OPERATOR_TOKENS is empty"),
        n => check("operator_tokens", Status::Pass, format!("{n} configured")),
    });
    checks.push(match &pool {
        Some(p) => audit_chains(p, settings).await,
        None => fail("audit_chains", "not checked: PostgreSQL is unreachable"),
    });
    checks.push(workers(settings).await);
    checks.push(canary(settings, pool.as_ref(), opts.canary_max_age).await);
    checks.push(match &opts.prometheus {
        None => check("prometheus", Status::Skip, "no --prometheus URL given"),
        Some(url) => prometheus(http, url).await,
    });
    checks.push(match &opts.alertmanager {
        None => check("alertmanager", Status::Skip, "no --alertmanager URL given"),
        Some(url) => alertmanager(http, url).await,
    });
    let failing = checks.iter().any(|c| c.status == Status::Fail);
    Report {
        status: if failing { Status::Fail } else { Status::Pass },
        checks,
    }
}

async fn role(pool: &PgPool) -> Check {
    const NAME: &str = "postgres_role";
    match leadq_platform::db::role_facts(pool).await {
        Err(_) => fail(NAME, "could not read the role"),
        Ok(f) if f.superuser => fail(
            NAME,
            format!(
                "{} is a superuser: row-level security does not apply",
                f.role
            ),
        ),
        Ok(f) if f.bypass_rls => fail(
            NAME,
            format!(
                "{} has BYPASSRLS: row-level security does not apply",
                f.role
            ),
        ),
        Ok(f) => match f.owns {
            Some(object) => fail(
                NAME,
                format!(
                    "{} owns {object}: it could disable row-level security and rewrite the \
                     audit trail; run as a runtime role and migrate as a separate owner \
                     (LEADQ_MIGRATION_DATABASE_URL, docs/security.md)",
                    f.role
                ),
            ),
            None => check(
                NAME,
                Status::Pass,
                format!("{}: neither superuser nor BYPASSRLS, owns no table", f.role),
            ),
        },
    }
}

async fn migrations(pool: &PgPool) -> Check {
    const NAME: &str = "migrations";
    let applied: Result<Vec<i64>, _> =
        sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
            .fetch_all(pool)
            .await;
    let Ok(applied) = applied else {
        return fail(NAME, "no migration applied (run leadq migrate)");
    };
    let pending: Vec<String> = leadq_platform::db::MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{}_{}", m.version, m.description.replace(' ', "_")))
        .collect();
    if pending.is_empty() {
        check(NAME, Status::Pass, format!("all {} applied", applied.len()))
    } else {
        fail(
            NAME,
            format!(
                "{} pending (run leadq migrate): {}",
                pending.len(),
                pending.join(", ")
            ),
        )
    }
}

/// Indexes left invalid. A migration that builds an index `concurrently` (outside a
/// transaction, so writes go on) leaves it invalid when it is interrupted: PostgreSQL keeps
/// updating it on every write but no query uses it, and `leadq migrate` fails on it until it is
/// dropped (migrations/README.md). An index being built right now is invalid too, until its
/// build ends.
async fn indexes(pool: &PgPool) -> Check {
    const NAME: &str = "indexes";
    let invalid: Result<Vec<String>, _> = sqlx::query_scalar(
        "select c.relname::text
           from pg_index i
           join pg_class c on c.oid = i.indexrelid
           join pg_namespace n on n.oid = c.relnamespace
          where not i.indisvalid and n.nspname = current_schema()
          order by 1",
    )
    .fetch_all(pool)
    .await;
    match invalid {
        Err(_) => fail(NAME, "could not read the catalog"),
        Ok(names) if names.is_empty() => check(NAME, Status::Pass, "every index is valid"),
        Ok(names) => fail(
            NAME,
            format!(
                "invalid (a `create index concurrently` interrupted, or still running): {}; \
                 unless a migration is running now, drop each as the migration owner \
                 (drop index concurrently <name>) and run leadq migrate",
                names.join(", ")
            ),
        ),
    }
}

async fn redis(settings: &Settings) -> Vec<Check> {
    let info = async {
        let probe = ServerProbe::connect_with(settings.redis_url(), &settings.queue.redis_tls)
            .await
            .ok()?;
        let memory = probe.info("memory").await.ok()?;
        let persistence = probe.info("persistence").await.ok()?;
        Some((memory, persistence))
    };
    let Ok(Some((memory, persistence))) = tokio::time::timeout(TIMEOUT, info).await else {
        return vec![
            fail("redis", "Redis is unreachable"),
            fail("redis_durability", "not checked: Redis is unreachable"),
        ];
    };
    let policy = memory
        .kv
        .get("maxmemory_policy")
        .cloned()
        .unwrap_or_default();
    let aof = persistence.kv.get("aof_enabled").map(String::as_str) == Some("1");
    let mut problems = Vec::new();
    if policy != "noeviction" {
        problems.push(format!(
            "maxmemory-policy is {policy}, not noeviction: Redis may evict queued jobs"
        ));
    }
    if !aof {
        problems.push("appendonly is off: a restart loses the jobs since the last snapshot".into());
    }
    vec![
        check("redis", Status::Pass, "reachable"),
        if problems.is_empty() {
            check(
                "redis_durability",
                Status::Pass,
                "maxmemory-policy noeviction, AOF on",
            )
        } else {
            check("redis_durability", Status::Warn, problems.join("; "))
        },
    ]
}

fn keys(settings: &Settings) -> Check {
    match (
        &settings.signing_keys,
        &settings.data_keys,
        &settings.pii_index_keys,
    ) {
        (Some(s), Some(d), Some(i)) => check(
            "keys",
            Status::Pass,
            format!(
                "signing: {} key(s), current {}; data: {} key(s), current {}; pii index: {} \
                 key(s), current {}",
                s.kids().count(),
                s.current().kid,
                d.kids().count(),
                d.current().kid,
                i.kids().count(),
                i.current().kid
            ),
        ),
        _ => fail(
            "keys",
            "LEADQ_SIGNING_KEYS, LEADQ_DATA_KEYS and LEADQ_PII_INDEX_KEYS must all be set",
        ),
    }
}

async fn audit_chains(pool: &PgPool, settings: &Settings) -> Check {
    const NAME: &str = "audit_chains";
    let Some(keys) = &settings.audit_keys else {
        return fail(
            NAME,
            "LEADQ_AUDIT_KEYS must be set to verify the audit chains",
        );
    };
    match leadq_platform::audit::verify_all(pool, keys).await {
        Err(_) => fail(NAME, "could not read the audit trail"),
        Ok(reports) => match leadq_platform::audit::summary(&reports) {
            (true, detail) => check(NAME, Status::Pass, detail),
            (false, detail) => fail(NAME, detail),
        },
    }
}

async fn workers(settings: &Settings) -> Check {
    const NAME: &str = "workers";
    let read = async {
        let queue = Queue::connect(
            settings.redis_url(),
            settings.queue.clone(),
            leadq_queue::signing::Signer::new(settings.signing_keys().clone()),
        )
        .await
        .ok()?;
        queue.workers(&kinds::names()).await.ok()
    };
    let Ok(Some(workers)) = tokio::time::timeout(TIMEOUT, read).await else {
        return fail(NAME, "not checked: Redis is unreachable");
    };
    let missing: Vec<&str> = kinds::names()
        .into_iter()
        .filter(|k| !workers.iter().any(|w| w.kinds.iter().any(|x| x == k)))
        .collect();
    if missing.is_empty() {
        check(
            NAME,
            Status::Pass,
            format!("{} live worker(s) serve every kind", workers.len()),
        )
    } else {
        fail(NAME, format!("no live worker for: {}", missing.join(", ")))
    }
}

async fn canary(settings: &Settings, pool: Option<&PgPool>, max_age: Duration) -> Check {
    const NAME: &str = "canary";
    if settings.canary.is_none() {
        return check(NAME, Status::Skip, "no canary configured (LEADQ_CANARY_*)");
    }
    let Some(pool) = pool else {
        return fail(NAME, "not checked: PostgreSQL is unreachable");
    };
    match leadq_platform::checks::last(pool, leadq_platform::checks::CANARY).await {
        Err(_) => fail(NAME, "could not read the canary's result"),
        Ok(None) => check(NAME, Status::Skip, "configured, but it has not run yet"),
        Ok(Some(r)) => {
            let since = |t: chrono::DateTime<chrono::Utc>| {
                (chrono::Utc::now() - t).to_std().unwrap_or_default()
            };
            match r.last_ok_at {
                Some(t) if since(t) <= max_age && r.ok => check(
                    NAME,
                    Status::Pass,
                    format!("green {} ago ({})", human(since(t)), r.detail),
                ),
                Some(t) => fail(
                    NAME,
                    format!("last green {} ago; last run: {}", human(since(t)), r.detail),
                ),
                None => fail(NAME, format!("never green; last run: {}", r.detail)),
            }
        }
    }
}

async fn get_json(http: &reqwest::Client, url: String) -> Option<serde_json::Value> {
    let r = http.get(url).timeout(TIMEOUT).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

async fn prometheus(http: &reqwest::Client, base: &str) -> Check {
    const NAME: &str = "prometheus";
    let base = base.trim_end_matches('/');
    let (Some(rules), Some(alerts)) = (
        get_json(http, format!("{base}/api/v1/rules")).await,
        get_json(http, format!("{base}/api/v1/alerts")).await,
    ) else {
        return fail(NAME, "Prometheus is unreachable");
    };
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let alerting = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["type"] == "alerting")
        .count();
    if alerting == 0 {
        return fail(NAME, "no alerting rule is loaded (rule_files)");
    }
    let firing: Vec<String> = alerts["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|a| a["state"] == "firing" && a["labels"]["alertname"] != "LeadqWatchdog")
        .map(|a| a["labels"]["alertname"].as_str().unwrap_or("?").to_owned())
        .collect();
    if firing.is_empty() {
        check(
            NAME,
            Status::Pass,
            format!("{alerting} alerting rule(s) loaded, none firing"),
        )
    } else {
        fail(NAME, format!("firing: {}", firing.join(", ")))
    }
}

async fn alertmanager(http: &reqwest::Client, base: &str) -> Check {
    const NAME: &str = "alertmanager";
    let base = base.trim_end_matches('/');
    let Some(receivers) = get_json(http, format!("{base}/api/v2/receivers")).await else {
        return fail(NAME, "Alertmanager is unreachable");
    };
    let Some(status) = get_json(http, format!("{base}/api/v2/status")).await else {
        return fail(NAME, "Alertmanager is unreachable");
    };
    let names: Vec<String> = receivers
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let config = status["config"]["original"].as_str().unwrap_or_default();
    let delivers = [
        "telegram_configs",
        "webhook_configs",
        "pagerduty_configs",
        "email_configs",
    ]
    .iter()
    .any(|k| config.contains(k));
    if delivers {
        check(
            NAME,
            Status::Pass,
            format!("receivers: {}", names.join(", ")),
        )
    } else {
        fail(
            NAME,
            "no receiver delivers anywhere (no telegram/webhook/pagerduty/email config)",
        )
    }
}
