//! Configuration from the environment, validated all at once.
//!
//! An operator who starts leadq with three mistakes should learn about all three from one
//! message, not one per restart. [`Settings::load`] therefore reads every variable, collects
//! every problem in a [`ConfigError`], and only then fails. Secrets may be given directly
//! (`DATABASE_URL`) or as a file path (`DATABASE_URL_FILE`, the Docker/Kubernetes secrets
//! convention), never both.
//!
//! Per-kind queue settings are named `LEADQ_<KIND>_<SETTING>` (for example
//! `LEADQ_LEAD_SCORE_CONCURRENCY`); the kinds and their defaults come from the job catalogue,
//! which this crate does not know, so they are passed in as [`KindDefaults`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

mod console;
mod crontab;
mod edge;
mod keys;
mod kinds;
mod oncall;
mod production;
mod tls;
pub use console::ConsoleSettings;
pub use crontab::parse_cron;
pub use edge::EdgeSettings;
pub use oncall::{
    AlertChannelSettings, AlertPolicySettings, CanarySettings, SecurityHealthSettings,
};
pub use tls::{ApiTls, Pem, RedisTls, TlsSettings};

use crate::keyring::Keyring;
use crate::secret::Secret;

/// Which settings a command needs. `leadq migrate` needs no Redis, for example.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// `DATABASE_URL` is required.
    pub database: bool,
    /// `REDIS_URL` is required.
    pub redis: bool,
    /// The keyrings (`LEADQ_SIGNING_KEYS`, `LEADQ_DATA_KEYS`, `LEADQ_AUDIT_KEYS`,
    /// `LEADQ_PII_INDEX_KEYS`) are required (every process that enqueues or runs jobs).
    pub keys: bool,
}

/// The defaults of one job kind, supplied by the job catalogue.
#[derive(Debug, Clone, Copy)]
pub struct KindDefaults {
    /// The stable kind string, e.g. `lead_score`.
    pub kind: &'static str,
    /// How many jobs of this kind one worker process runs at once.
    pub concurrency: usize,
    /// Attempts before a transiently failing job is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; each later retry doubles it (with jitter) up to `backoff_max`.
    pub backoff_base: Duration,
    /// Upper bound of a retry delay.
    pub backoff_max: Duration,
    /// Hard deadline for one run of the handler.
    pub timeout: Duration,
}

/// The settings of one job kind, after the environment has been applied.
#[derive(Debug, Clone)]
pub struct KindSettings {
    /// How many jobs of this kind one worker process runs at once.
    pub concurrency: usize,
    /// Attempts before a transiently failing job is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff_base: Duration,
    /// Upper bound of a retry delay.
    pub backoff_max: Duration,
    /// Hard deadline for one run of the handler; past it the run counts as a transient failure.
    pub timeout: Duration,
}

/// Queue-engine settings shared by every kind.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Key prefix of every Redis key leadq writes (`{<prefix>:<kind>}:…`).
    pub prefix: String,
    /// How long a fetched job stays leased without renewal. A crashed worker's jobs are run
    /// again by another worker about this long after the crash.
    pub lease: Duration,
    /// Lease expiries after which a job is dead-lettered as `poisoned` (it keeps killing workers).
    pub max_lease_expiries: u32,
    /// How long a graceful stop waits for in-flight jobs before handing them back.
    pub shutdown_timeout: Duration,
    /// Per-kind settings, keyed by kind.
    pub kinds: BTreeMap<&'static str, KindSettings>,
    /// The kinds a worker process runs (`LEADQ_WORKER_KINDS`, a comma-separated list; every
    /// kind when unset), so each kind can be deployed and scaled on its own.
    pub worker_kinds: Vec<&'static str>,
    /// How long a `message_id` is remembered for deduplication at enqueue.
    pub dedupe_ttl: Duration,
    /// Completed job ids kept for inspection (the count cap of the `done` set).
    pub keep_done: u64,
    /// Completed job ids older than this are trimmed too (the age cap of the `done` set).
    pub keep_done_for: Duration,
    /// Dead letters older than this are deleted (retention; re-drive or purge them before).
    pub dead_letter_ttl: Duration,
    /// Queue shards per kind (`LEADQ_QUEUE_SHARDS`): each tenant's jobs of a kind live in one
    /// shard, each shard under its own hash tag, so on a Redis Cluster the kinds' load spreads
    /// over the primaries by tenant. Raise it freely; lowering it strands the jobs of the
    /// shards dropped (drain them first).
    pub shards: u16,
    /// `REDIS_URL` names the seed nodes of a Redis Cluster (`LEADQ_REDIS_CLUSTER`).
    pub redis_cluster: bool,
    /// CA bundle and client certificate for `rediss://` (`LEADQ_REDIS_*_FILE`).
    pub redis_tls: RedisTls,
}

/// The platform's recurring tasks and their default schedules (cron syntax, UTC). Each is set
/// or switched off with `LEADQ_SCHEDULE_<NAME>` (a cron expression, or `off`).
pub const SCHEDULE_DEFAULTS: &[(&str, &str)] = &[
    // Re-requests CRM syncs that were wanted but never confirmed (a lost job, a long outage).
    ("crm_reconcile", "*/5 * * * *"),
    // Sets job_runs rows whose end was never recorded to what the queue knows.
    ("job_runs_reconcile", "*/10 * * * *"),
    // Deletes finished job_runs rows older than LEADQ_JOB_RUNS_KEEP_DAYS.
    ("job_runs_retention", "17 3 * * *"),
    // Recomputes every audit hash chain; the security health checks read its last result.
    ("audit_verify", "23 2 * * *"),
    // Compares every tenant's limits and entitlements with its signed billing baseline and
    // the audited changes since (leadq_billing_discrepancies, LeadqBillingDiscrepancy).
    ("billing_reconcile", "41 * * * *"),
    // Converts personal data written before sealing at rest, re-seals what an older data key
    // sealed and re-indexes under a newer index key (leadq_jobs::pii::at_rest).
    ("pii_reseal", "53 * * * *"),
    // Posts a synthetic lead through the public API and waits for its score (when
    // LEADQ_CANARY_* is set; a no-op otherwise).
    ("canary", "* * * * *"),
];

/// A recurring task and when it fires.
#[derive(Debug, Clone)]
pub struct ScheduleSetting {
    /// The task's name (one of [`SCHEDULE_DEFAULTS`]).
    pub name: &'static str,
    /// The expression as configured.
    pub pattern: String,
    /// When it fires; `None` when switched off.
    pub schedule: Option<cron::Schedule>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines (local debugging).
    Pretty,
}

/// Every setting of a leadq process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PostgreSQL connection string of the runtime role (`api`, `worker`, the CLI).
    pub database_url: Option<Secret>,
    /// The migration owner's connection string (`LEADQ_MIGRATION_DATABASE_URL`), used only by
    /// `leadq migrate`; `None`: `database_url`.
    pub migration_database_url: Option<Secret>,
    /// The role `leadq migrate` grants the runtime privileges to (`LEADQ_RUNTIME_ROLE`);
    /// `None`: the user of `database_url`.
    pub runtime_role: Option<String>,
    /// Redis connection string.
    pub redis_url: Option<Secret>,
    /// Sentry DSN; Sentry stays off when unset.
    pub sentry_dsn: Option<Secret>,
    /// Keys that sign every envelope (the first signs, all verify).
    pub signing_keys: Option<Keyring>,
    /// Keys that seal personal data in queued payloads (the first seals, all open).
    pub data_keys: Option<Keyring>,
    /// Keys the audit chain's links are HMACs under (`LEADQ_AUDIT_KEYS`), never stored in the
    /// database.
    pub audit_keys: Option<Keyring>,
    /// Keys of the blind index over sealed emails and phones, and of export tokens
    /// (`LEADQ_PII_INDEX_KEYS`; the first indexes, all find).
    pub pii_index_keys: Option<Keyring>,
    /// Operator (platform on-call) bearer tokens, by operator name, for cross-tenant views.
    pub operator_tokens: Vec<(String, Secret)>,
    /// Deployment environment name, reported to Sentry.
    pub environment: String,
    /// Where `leadq api` listens.
    pub api_addr: SocketAddr,
    /// Where `leadq worker` serves `/healthz`, `/readyz` and `/metrics`.
    pub worker_addr: SocketAddr,
    /// `tracing` filter directive, e.g. `info,leadq=debug`.
    pub log_filter: String,
    /// Log output format.
    pub log_format: LogFormat,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// How many tenants get their own `tenant` label value in per-tenant metrics
    /// (`LEADQ_METRICS_TENANT_CAP`); the rest are counted as `other`.
    pub metrics_tenant_cap: usize,
    /// Extra regexes the scrubber masks (`LEADQ_SCRUB_PATTERNS`, a JSON array of strings).
    pub scrub_patterns: Vec<String>,
    /// Queue-engine settings.
    pub queue: QueueSettings,
    /// The recurring platform tasks, run once per firing across all workers.
    pub schedules: Vec<ScheduleSetting>,
    /// Finished `job_runs` rows older than this are deleted by `job_runs_retention`.
    pub job_runs_keep: Duration,
    /// The synthetic canary, when configured.
    pub canary: Option<CanarySettings>,
    /// Thresholds of the security health checks.
    pub security: SecurityHealthSettings,
    /// The Telegram bot and chat error alerts go to, when configured (`leadq-notify`; the
    /// security checks call its `getMe`).
    pub alert_channel: Option<AlertChannelSettings>,
    /// TLS on the API listener, HSTS, and whether plain store URLs were refused.
    pub tls: TlsSettings,
    /// Abuse detection, per-address limits, the webhook budget and `/metrics` access.
    pub edge: EdgeSettings,
    /// The operator console's sessions and dashboard links.
    pub console: ConsoleSettings,
}

/// Every problem found in the environment, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// One line per missing or invalid setting.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Default address of the API.
pub const API_ADDR_DEFAULT: &str = "127.0.0.1:8080";
/// Default address of the worker's health and metrics server.
pub const WORKER_ADDR_DEFAULT: &str = "127.0.0.1:9091";
/// Default Redis key prefix.
pub const QUEUE_PREFIX_DEFAULT: &str = "leadq";

/// Reads variables from a map, recording problems instead of failing on the first.
struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    fn secret(&mut self, name: &str, required: bool) -> Option<Secret> {
        let file_var = format!("{name}_FILE");
        match (self.get(name), self.get(&file_var)) {
            (Some(_), Some(_)) => {
                self.problems
                    .push(format!("{name} and {file_var} are both set; set only one"));
                None
            }
            (Some(v), None) => Some(Secret::new(v)),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim())),
                Ok(_) => {
                    self.problems
                        .push(format!("{file_var} points to an empty file ({path})"));
                    None
                }
                Err(e) => {
                    self.problems
                        .push(format!("{file_var} cannot be read ({path}): {e}"));
                    None
                }
            },
            (None, None) => {
                if required {
                    self.problems
                        .push(format!("{name} is required (or {file_var})"));
                }
                None
            }
        }
    }

    fn parsed<T: std::str::FromStr>(&mut self, name: &str, default: T, what: &str) -> T {
        match self.get(name) {
            None => default,
            Some(raw) => match raw.parse() {
                Ok(v) => v,
                Err(_) => {
                    self.problems.push(format!("{name}={raw:?} is not {what}"));
                    default
                }
            },
        }
    }

    fn positive<T>(&mut self, name: &str, default: T, what: &str) -> T
    where
        T: std::str::FromStr + PartialOrd + Default + Copy,
    {
        let v = self.parsed(name, default, what);
        if v <= T::default() {
            self.problems.push(format!("{name} must be greater than 0"));
            return default;
        }
        v
    }

    fn millis(&mut self, name: &str, default: Duration) -> Duration {
        let ms = self.positive(
            name,
            default.as_millis() as u64,
            "a whole number of milliseconds",
        );
        Duration::from_millis(ms)
    }

    fn secs(&mut self, name: &str, default: Duration) -> Duration {
        let s = self.positive(name, default.as_secs(), "a whole number of seconds");
        Duration::from_secs(s)
    }
}

impl Settings {
    /// Reads the process environment. See [`Settings::load`].
    pub fn from_env(needs: Needs, kinds: &[KindDefaults]) -> Result<Self, ConfigError> {
        #[allow(clippy::disallowed_methods)]
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        Self::load(&vars, needs, kinds)
    }

    /// Builds settings from `vars`, reporting every problem at once.
    pub fn load(
        vars: &BTreeMap<String, String>,
        needs: Needs,
        kinds: &[KindDefaults],
    ) -> Result<Self, ConfigError> {
        let mut r = Reader {
            vars,
            problems: Vec::new(),
        };
        let mut database_url = r.secret("DATABASE_URL", needs.database);
        if let Some(url) = &database_url {
            let u = url.expose();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                r.problems
                    .push("DATABASE_URL must start with postgres:// or postgresql://".into());
            }
        }
        let migration_database_url = r.secret("LEADQ_MIGRATION_DATABASE_URL", false);
        let runtime_role = r.get("LEADQ_RUNTIME_ROLE").map(str::to_owned);
        let redis_url = r.secret("REDIS_URL", needs.redis);
        let redis_cluster = match r.get("LEADQ_REDIS_CLUSTER").unwrap_or("false") {
            "true" | "1" => true,
            "false" | "0" => false,
            other => {
                r.problems.push(format!(
                    "LEADQ_REDIS_CLUSTER={other:?} is not true or false"
                ));
                false
            }
        };
        if let Some(url) = &redis_url {
            // A Redis Cluster is reached through one or more seed nodes, comma-separated.
            let nodes: Vec<&str> = url.expose().split(',').map(str::trim).collect();
            if nodes
                .iter()
                .any(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
            {
                r.problems
                    .push("REDIS_URL must start with redis:// or rediss://".into());
            } else if nodes.len() > 1 && !redis_cluster {
                r.problems.push(
                    "REDIS_URL lists several nodes; set LEADQ_REDIS_CLUSTER=true for a Redis Cluster"
                        .into(),
                );
            }
        }
        let tls = tls::read(&mut r, &mut database_url, redis_url.as_ref());
        let shards = r.positive("LEADQ_QUEUE_SHARDS", 1u16, "a whole number");
        if shards > 1024 {
            r.problems
                .push("LEADQ_QUEUE_SHARDS must be at most 1024".into());
        }
        let sentry_dsn = r.secret("SENTRY_DSN", false);
        if let Some(dsn) = &sentry_dsn {
            if dsn.expose().parse::<sentry::types::Dsn>().is_err() {
                r.problems
                    .push("SENTRY_DSN is not a valid Sentry DSN".into());
            }
        }
        let keys::Keyrings {
            signing: signing_keys,
            data: data_keys,
            audit: audit_keys,
            pii_index: pii_index_keys,
        } = keys::read(&mut r, needs.keys);
        let operator_tokens = match r.secret("LEADQ_OPERATOR_TOKENS", false) {
            None => Vec::new(),
            Some(spec) => {
                let mut out = Vec::new();
                for (i, part) in spec.expose().split(',').map(str::trim).enumerate() {
                    match part.split_once(':') {
                        Some((name, token))
                            if !name.is_empty()
                                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                                && token.len() >= 32 =>
                        {
                            out.push((name.to_owned(), Secret::new(token)));
                        }
                        _ => r.problems.push(format!(
                            "LEADQ_OPERATOR_TOKENS entry {} must be name:token with a token of \
                             at least 32 characters",
                            i + 1
                        )),
                    }
                }
                out
            }
        };
        let environment = r
            .get("LEADQ_ENVIRONMENT")
            .unwrap_or("development")
            .to_owned();
        let api_addr = r.parsed(
            "LEADQ_API_ADDR",
            API_ADDR_DEFAULT.parse().expect("valid default"),
            "a socket address such as 127.0.0.1:8080",
        );
        let worker_addr = r.parsed(
            "LEADQ_WORKER_ADDR",
            WORKER_ADDR_DEFAULT.parse().expect("valid default"),
            "a socket address such as 127.0.0.1:9091",
        );
        let log_filter = r.get("LEADQ_LOG").unwrap_or("info").to_owned();
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            r.problems.push(format!(
                "LEADQ_LOG={log_filter:?} is not a valid tracing filter"
            ));
        }
        let log_format = match r.get("LEADQ_LOG_FORMAT").unwrap_or("json") {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                r.problems.push(format!(
                    "LEADQ_LOG_FORMAT={other:?} is not one of json, pretty"
                ));
                LogFormat::Json
            }
        };
        let max_body_bytes = r.positive("LEADQ_MAX_BODY_BYTES", 256 * 1024, "a number of bytes");
        let metrics_tenant_cap = r.positive("LEADQ_METRICS_TENANT_CAP", 50, "a number of tenants");
        let scrub_patterns: Vec<String> = match r.get("LEADQ_SCRUB_PATTERNS") {
            None => Vec::new(),
            Some(raw) => match serde_json::from_str::<Vec<String>>(raw) {
                Ok(p) => {
                    if let Err(e) = crate::scrub::Scrubber::new(&p) {
                        r.problems.push(format!("LEADQ_SCRUB_PATTERNS: {e}"));
                    }
                    p
                }
                Err(_) => {
                    r.problems
                        .push("LEADQ_SCRUB_PATTERNS must be a JSON array of regex strings".into());
                    Vec::new()
                }
            },
        };

        let prefix = r
            .get("LEADQ_QUEUE_PREFIX")
            .unwrap_or(QUEUE_PREFIX_DEFAULT)
            .to_owned();
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            r.problems.push(format!(
                "LEADQ_QUEUE_PREFIX={prefix:?} may only hold letters, digits, '_', '-' and '.'"
            ));
        }
        let lease = r.millis("LEADQ_LEASE_MS", Duration::from_secs(15));
        let max_lease_expiries = r.positive("LEADQ_MAX_LEASE_EXPIRIES", 3u32, "a whole number");
        let shutdown_timeout = r.secs("LEADQ_SHUTDOWN_TIMEOUT_SECS", Duration::from_secs(25));
        let dedupe_ttl = r.secs("LEADQ_DEDUPE_TTL_SECS", Duration::from_secs(24 * 3600));
        let keep_done = r.positive("LEADQ_KEEP_DONE", 10_000u64, "a whole number");
        let keep_done_for = r.secs("LEADQ_KEEP_DONE_SECS", Duration::from_secs(24 * 3600));
        let dead_letter_days =
            r.positive("LEADQ_DEAD_LETTER_DAYS", 14u64, "a whole number of days");
        let dead_letter_ttl = Duration::from_secs(dead_letter_days.saturating_mul(86_400));
        let mut schedules = Vec::new();
        for (name, default) in SCHEDULE_DEFAULTS {
            let var = format!("LEADQ_SCHEDULE_{}", name.to_ascii_uppercase());
            let pattern = r.get(&var).unwrap_or(default).trim().to_owned();
            let schedule = if pattern == "off" {
                None
            } else {
                match parse_cron(&pattern) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        r.problems.push(format!(
                            "{var}={pattern:?} is not a cron expression or off: {e}"
                        ));
                        None
                    }
                }
            };
            schedules.push(ScheduleSetting {
                name,
                pattern,
                schedule,
            });
        }
        let job_runs_keep_days =
            r.positive("LEADQ_JOB_RUNS_KEEP_DAYS", 30u64, "a whole number of days");
        let job_runs_keep = Duration::from_secs(job_runs_keep_days.saturating_mul(86_400));
        // The billing reconciliation compares yesterday's accepted jobs with their job_runs
        // rows; kept one day, the retention deletes yesterday's first hours before it runs,
        // and every such job reads as a `usage_gap` finding.
        let on = |name: &str| {
            schedules
                .iter()
                .any(|s| s.name == name && s.schedule.is_some())
        };
        if job_runs_keep_days < 2 && on("billing_reconcile") && on("job_runs_retention") {
            r.problems.push(format!(
                "LEADQ_JOB_RUNS_KEEP_DAYS must be at least 2 while billing_reconcile runs \
                 (it is {job_runs_keep_days}): the reconciliation compares yesterday's accepted \
                 jobs with their job_runs rows, which a shorter retention deletes"
            ));
        }
        let oncall = oncall::read(&mut r);
        let edge = edge::read(&mut r);
        let console = console::read(&mut r);
        let (kind_settings, worker_kinds) = kinds::read(&mut r, kinds, lease);

        if environment == "production" && cfg!(feature = "unaudited-reads") {
            r.problems.push(
                "this binary was built with the `unaudited-reads` feature (benchmarks only: \
                 tenant reads are not audited) and cannot run with LEADQ_ENVIRONMENT=production"
                    .into(),
            );
        }
        if environment == "production"
            && needs.keys
            && edge.metrics_token.is_none()
            && edge.metrics_addr.is_none()
        {
            // The processes that serve /metrics need the keys; `leadq migrate` does not, and
            // runs without the token.
            r.problems.push(
                "LEADQ_ENVIRONMENT=production needs LEADQ_METRICS_TOKEN (or _FILE) or \
                 LEADQ_METRICS_ADDR: without either, /metrics (tenant slugs, queue depths, \
                 error rates) answers anyone who reaches the API"
                    .into(),
            );
        }
        if environment == "production" {
            r.problems.extend(production::problems(
                &[
                    ("LEADQ_SIGNING_KEYS", signing_keys.as_ref()),
                    ("LEADQ_DATA_KEYS", data_keys.as_ref()),
                    ("LEADQ_AUDIT_KEYS", audit_keys.as_ref()),
                    ("LEADQ_PII_INDEX_KEYS", pii_index_keys.as_ref()),
                ],
                &operator_tokens,
                &[
                    ("DATABASE_URL", database_url.as_ref()),
                    (
                        "LEADQ_MIGRATION_DATABASE_URL",
                        migration_database_url.as_ref(),
                    ),
                ],
            ));
        }
        if !r.problems.is_empty() {
            return Err(ConfigError {
                problems: r.problems,
            });
        }
        Ok(Settings {
            database_url,
            migration_database_url,
            runtime_role,
            redis_url,
            sentry_dsn,
            signing_keys,
            data_keys,
            audit_keys,
            pii_index_keys,
            operator_tokens,
            environment,
            api_addr,
            worker_addr,
            log_filter,
            log_format,
            max_body_bytes,
            metrics_tenant_cap,
            scrub_patterns,
            queue: QueueSettings {
                prefix,
                lease,
                max_lease_expiries,
                shutdown_timeout,
                kinds: kind_settings,
                worker_kinds,
                dedupe_ttl,
                keep_done,
                keep_done_for,
                dead_letter_ttl,
                shards,
                redis_cluster,
                redis_tls: tls.redis,
            },
            schedules,
            job_runs_keep,
            canary: oncall.canary,
            security: oncall.security,
            alert_channel: oncall.alert_channel,
            tls: tls.settings,
            edge,
            console,
        })
    }

    /// The database URL; only call where [`Needs::database`] was requested.
    pub fn database_url(&self) -> &Secret {
        self.database_url
            .as_ref()
            .expect("DATABASE_URL was required at load time")
    }

    /// The Redis URL; only call where [`Needs::redis`] was requested.
    pub fn redis_url(&self) -> &Secret {
        self.redis_url
            .as_ref()
            .expect("REDIS_URL was required at load time")
    }
}

#[cfg(test)]
pub(super) mod tests;
