//! Every metric name and label leadq emits, spelled once.
//!
//! Dashboards and alert rules depend on these strings; renaming one is a breaking change for
//! operators, so they live here and nowhere else. Call sites use the constants (or the small
//! helpers below), never string literals. Label values come from fixed sets (kinds, outcomes,
//! states, route templates): never a raw id, never an error message.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: jobs finished, by `kind` and `outcome` (see [`outcome`]).
pub const JOBS_TOTAL: &str = "leadq_jobs_total";
/// Histogram: handler run time in seconds, by `kind`.
pub const JOB_DURATION_SECONDS: &str = "leadq_job_duration_seconds";
/// Histogram: time from when a job was due (its enqueue, its `run_at`, or the end of a
/// rate-limit snooze) to the start of its first attempt, by `kind`.
pub const JOB_WAIT_SECONDS: &str = "leadq_job_wait_seconds";
/// Gauge: jobs per `kind` and `state` (see [`state`]), read from Redis at scrape time.
pub const QUEUE_DEPTH: &str = "leadq_queue_depth";
/// Gauge: Unix time of a worker's last heartbeat, by `worker`.
pub const WORKER_HEARTBEAT_TIMESTAMP_SECONDS: &str = "leadq_worker_heartbeat_timestamp_seconds";
/// Counter: retries scheduled, by `kind`.
pub const JOB_RETRIES_TOTAL: &str = "leadq_job_retries_total";
/// Counter: HTTP requests, by `route` (the route template), `method` and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "leadq_http_requests_total";
/// Histogram: HTTP request duration in seconds, by `route`.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "leadq_http_request_duration_seconds";
/// Counter: HTTP requests of a known tenant (authenticated, or a webhook whose tenant was
/// found), by `tenant` (bounded, as [`TENANT_JOBS_TOTAL`]), `route` (template) and
/// `status_class` (`2xx`, `4xx`, `5xx`).
pub const TENANT_HTTP_REQUESTS_TOTAL: &str = "leadq_tenant_http_requests_total";
/// Counter: CRM calls per tenant, by `tenant` (bounded) and `status_class` (`2xx`, `4xx`,
/// `5xx`, or `error` when no answer came).
pub const TENANT_CRM_REQUESTS_TOTAL: &str = "leadq_tenant_crm_requests_total";
/// Gauge (info): 1 for each setting a tenant runs with that differs from the platform default,
/// by `tenant` (bounded) and `setting` (`limits`, `kind_mode:<kind>=<mode>`, `paused:<kind>`,
/// `cap:<kind>`, `weight:<kind>`, `scoring`, `crm`). Refreshed at scrape by the API.
pub const TENANT_OVERRIDE_INFO: &str = "leadq_tenant_override_info";
/// Counter: Redis operations of the queue engine that failed and were retried, by `op`.
pub const QUEUE_REDIS_ERRORS_TOTAL: &str = "leadq_queue_redis_errors_total";
/// Counter: acknowledgements refused because the lease had moved on (the job ran twice), by `kind`.
pub const QUEUE_LOST_LEASES_TOTAL: &str = "leadq_queue_lost_leases_total";
/// Counter: jobs accepted by the enqueue API, by `kind` and `result` (`enqueued`, `duplicate`).
pub const JOBS_ENQUEUED_TOTAL: &str = "leadq_jobs_enqueued_total";

/// Counter: security events, by `kind` (`bad_signature`, `unauthorized`,
/// `cross_tenant_activity`: one principal touching more tenants in a window than
/// `LEADQ_CROSS_TENANT_THRESHOLD`, counted once per window).
pub const SECURITY_EVENTS_TOTAL: &str = "leadq_security_events_total";

/// Gauge: differences the last billing reconciliation found between a tenant's signed
/// baseline (plus the audited changes since) and its live configuration, by `tenant` (bounded:
/// `LEADQ_METRICS_TENANT_CAP`, the rest `other`) and `kind` (`limits`, a job kind, or
/// `baseline` for a baseline whose signature does not verify).
pub const BILLING_DISCREPANCIES: &str = "leadq_billing_discrepancies";

/// Counter: jobs scored both ways for a tenant with candidate scoring rules, by `kind` and
/// `outcome`: `agree` (same tier), `disagree`, or `shadow_only` (the kind runs in shadow mode:
/// no live outcome). `leadq shadow report` has the detail per tenant.
pub const SHADOW_COMPARISONS_TOTAL: &str = "leadq_shadow_comparisons_total";

/// Counter: group commits of `lead_score` jobs (`leadq_jobs::lead::group`), by `outcome`:
/// `together` (the batch was written in one transaction) or `one_by_one` (it failed and its
/// jobs ran alone, each with its own outcome: look for the warning logged with the error).
/// [`LEAD_GROUP_COMMIT_JOBS_TOTAL`] over this is the mean batch size.
pub const LEAD_GROUP_COMMITS_TOTAL: &str = "leadq_lead_group_commits_total";

/// Counter: `lead_score` jobs written by group commits, by the same `outcome`.
pub const LEAD_GROUP_COMMIT_JOBS_TOTAL: &str = "leadq_lead_group_commit_jobs_total";

/// Counter: audit rows linked into their chain by a sealer (`leadq_platform::audit::seal`).
pub const AUDIT_ROWS_SEALED_TOTAL: &str = "leadq_audit_rows_sealed_total";

/// Counter: requests refused at the edge before any credential is checked, by `reason`
/// (`auth_lockout`: the source address failed authentication too often; `unauthenticated_rate`:
/// too many requests without credentials from one address).
pub const EDGE_REFUSALS_TOTAL: &str = "leadq_edge_refusals_total";

/// Counter: webhook deliveries above their tenant's webhook budget, accepted and enqueued at
/// low priority (never refused), by `source`.
pub const WEBHOOK_OVER_BUDGET_TOTAL: &str = "leadq_webhook_over_budget_total";

/// Counter: refused credentials, by `reason` (invalid, expired, revoked, tenant_inactive,
/// insufficient_scope, operator_only, operator_not_registered, operator_disabled,
/// operator_lacks_permission).
pub const AUTH_FAILURES_TOTAL: &str = "leadq_auth_failures_total";

/// Counter: requests refused by a per-tenant limit, by `scope` (tenant_rate, tenant_quota,
/// tenant_erasures) and
/// `tenant` (bounded, as [`TENANT_JOBS_TOTAL`]).
pub const RATE_LIMITED_TOTAL: &str = "leadq_rate_limited_total";

/// Counter: webhook deliveries, by `source` (`chatwoot`, `telegram`) and `outcome` (see
/// [`webhook_outcome`]).
pub const WEBHOOK_REQUESTS_TOTAL: &str = "leadq_webhook_requests_total";
/// Counter: CRM API calls, by `status` (the HTTP status code, or `timeout` / `error` when no
/// response arrived).
pub const CRM_REQUESTS_TOTAL: &str = "leadq_crm_requests_total";
/// Histogram: CRM API call duration in seconds.
pub const CRM_REQUEST_DURATION_SECONDS: &str = "leadq_crm_request_duration_seconds";
/// Counter: CRM 429 answers and proactive pauses, by `policy` (`ten_secondly_rolling`,
/// `secondly` (the search API), `daily`, `other`, and `window_exhausted` when leadq paused
/// itself on `X-HubSpot-RateLimit-Remaining: 0` before HubSpot had to refuse).
pub const CRM_RATE_LIMITED_TOTAL: &str = "leadq_crm_rate_limited_total";
/// Counter: OAuth access-token refreshes against the CRM, by `result` (`ok`, `rejected`,
/// `error`). A `rejected` refresh needs a human: the tenant must re-authorize.
pub const CRM_TOKEN_REFRESHES_TOTAL: &str = "leadq_crm_token_refreshes_total";
/// Counter: jobs finished per tenant, by `tenant` (a known slug, or `other` beyond the
/// configured cap), `kind` and `outcome` (see [`outcome`]).
pub const TENANT_JOBS_TOTAL: &str = "leadq_tenant_jobs_total";

/// Counter: runs of the platform's recurring tasks (see `worker/src/scheduler.rs`), by
/// `schedule` and `result` (`ok`, `error`). One per schedule across all workers.
pub const SCHEDULE_RUNS_TOTAL: &str = "leadq_schedule_runs_total";
/// Gauge: 1 while this worker process holds the scheduler's leader lease, else 0.
pub const SCHEDULER_LEADER: &str = "leadq_scheduler_leader";
/// Gauge: 1 if the last run of the recurring task `schedule` succeeded, 0 if it failed (or was
/// skipped because the run before it had not ended), by `schedule`. Kept in PostgreSQL
/// (`platform_checks`), so it holds across firings and leaders: a daily task that failed stays
/// 0 until a run succeeds. Published by every worker for the schedules it has switched on.
pub const SCHEDULE_LAST_RUN_OK: &str = "leadq_schedule_last_run_ok";
/// Gauge: Unix time of the last successful run of the recurring task `schedule`.
pub const SCHEDULE_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "leadq_schedule_last_success_timestamp_seconds";

/// Gauge: 1 when this process reached the `dependency` (`postgres`, `redis`) at its last
/// scrape, else 0. Refreshed on every `/metrics` request, with a short timeout.
pub const DEPENDENCY_UP: &str = "leadq_dependency_up";
/// Histogram: from enqueue (or the `run_at` a job was enqueued with, or its re-drive) to done
/// (completed or dead-lettered), by `kind`: the job SLA.
pub const JOB_TURNAROUND_SECONDS: &str = "leadq_job_turnaround_seconds";
/// Histogram: where a run's time goes, by `kind` and `phase` (one of [`phase`]): what
/// `leadq bench --mode e2e` breaks down, and where to look when jobs slow down.
pub const JOB_PHASE_SECONDS: &str = "leadq_job_phase_seconds";
/// Gauge: 1 while the security check `check` passes, 0 while it fails (see
/// `leadq_jobs::ops::security`). Published by the API, refreshed every 30 s; and by every
/// worker's audit sealer as `check="audit_sealing"`, refreshed every pass: 0 while a chain
/// with rows to seal is held because its newest rows are gone (`audit::seal::Held`).
pub const SECURITY_CHECK_OK: &str = "leadq_security_check_ok";
/// Gauge: active API keys expiring within 7 days.
pub const API_KEYS_EXPIRING: &str = "leadq_api_keys_expiring";
/// Gauge: 1 if the last synthetic canary run succeeded, 0 if it failed (read from Redis at
/// scrape time, so a stopped worker shows an ageing success, not a missing series).
pub const CANARY_SUCCESS: &str = "leadq_canary_success";
/// Gauge: 1 when this process is configured to run the synthetic canary (`LEADQ_CANARY_*`),
/// else 0. `LeadqCanaryFailing` pages only where some process says 1: a deployment without a
/// canary has no canary series at all, and that is not an outage.
pub const CANARY_CONFIGURED: &str = "leadq_canary_configured";
/// Gauge: how long the last canary run took, post to scored, in seconds.
pub const CANARY_DURATION_SECONDS: &str = "leadq_canary_duration_seconds";
/// Gauge: Unix time of the last successful canary run.
pub const CANARY_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "leadq_canary_last_success_timestamp_seconds";
/// Histogram: Chatwoot chat SLA, from a contact's incoming message to the first outgoing
/// agent reply in the same conversation, in seconds.
pub const CHAT_FIRST_REPLY_SECONDS: &str = "leadq_chat_first_reply_seconds";

/// Gauge: worker threads of this process's tokio runtime.
pub const TOKIO_WORKERS: &str = "leadq_tokio_workers";
/// Gauge: tasks waiting in the tokio runtime's global queue (a backlog of ready work the
/// threads cannot keep up with).
pub const TOKIO_GLOBAL_QUEUE_DEPTH: &str = "leadq_tokio_global_queue_depth";
/// Gauge: tasks alive in the tokio runtime.
pub const TOKIO_ALIVE_TASKS: &str = "leadq_tokio_alive_tasks";
/// Counter: error alerts (`leadq-notify`), by `outcome` (see [`alert_outcome`]).
pub const ERROR_ALERTS_TOTAL: &str = "leadq_error_alerts_total";
/// Gauge: 1 once Telegram answered 403 (the bot was blocked or removed from the alert
/// chat): this process sends no more alerts until restarted. 0 otherwise.
pub const ERROR_ALERTS_BLOCKED: &str = "leadq_error_alerts_blocked";

/// Label names.
pub mod label {
    /// A recurring task's name.
    pub const SCHEDULE: &str = "schedule";
    /// Webhook producer, `chatwoot` or `telegram`.
    pub const SOURCE: &str = "source";
    /// Tenant slug (bounded: see [`super::TENANT_JOBS_TOTAL`]).
    pub const TENANT: &str = "tenant";
    /// A rate-limit policy.
    pub const POLICY: &str = "policy";
    /// Job kind, e.g. `lead_score`.
    pub const KIND: &str = "kind";
    /// Job outcome, one of [`super::outcome`].
    pub const OUTCOME: &str = "outcome";
    /// Queue state, one of [`super::state`].
    pub const STATE: &str = "state";
    /// Worker id.
    pub const WORKER: &str = "worker";
    /// HTTP route template, e.g. `/v1/leads/{external_id}`.
    pub const ROUTE: &str = "route";
    /// HTTP method.
    pub const METHOD: &str = "method";
    /// HTTP status code.
    pub const STATUS: &str = "status";
    /// Queue operation.
    pub const OP: &str = "op";
    /// Enqueue result.
    pub const RESULT: &str = "result";
    /// Why something was refused.
    pub const REASON: &str = "reason";
    /// Which limit.
    pub const SCOPE: &str = "scope";
    /// An external dependency: `postgres` or `redis`.
    pub const DEPENDENCY: &str = "dependency";
    /// A security check's name.
    pub const CHECK: &str = "check";
    /// HTTP status class: `2xx`, `3xx`, `4xx`, `5xx`.
    pub const STATUS_CLASS: &str = "status_class";
    /// A tenant setting that differs from the default (see [`super::TENANT_OVERRIDE_INFO`]).
    pub const SETTING: &str = "setting";
    /// A step of a job's run, one of [`super::phase`].
    pub const PHASE: &str = "phase";
}

/// Values of the `phase` label of [`JOB_PHASE_SECONDS`], in the order a run goes through them.
pub mod phase {
    /// Writing the run's start to `job_runs` (group commit).
    pub const RECORD_START: &str = "record_start";
    /// The authorization check (cached, or one PostgreSQL query).
    pub const AUTHORIZE: &str = "authorize";
    /// Authorization and the handler together (the handler alone: this minus `authorize`).
    pub const RUN: &str = "run";
    /// Settling the job in Redis (ack, retry or dead letter; group-committed per worker).
    pub const SETTLE: &str = "settle";
    /// Writing the run's outcome to `job_runs` (group commit) and the dead-letter audit.
    pub const RECORD_END: &str = "record_end";
    /// Every phase, in order.
    pub const ALL: [&str; 5] = [RECORD_START, AUTHORIZE, RUN, SETTLE, RECORD_END];
}

/// Values of the `outcome` label of [`JOBS_TOTAL`].
pub mod outcome {
    /// The handler succeeded.
    pub const COMPLETED: &str = "completed";
    /// The handler failed transiently; the job will run again.
    pub const RETRIED: &str = "retried";
    /// The job was dead-lettered.
    pub const DEAD: &str = "dead";
    /// The job was rate-limited and will run again after a delay, without using an attempt.
    pub const RATE_LIMITED: &str = "rate_limited";
}

/// Values of the `outcome` label of [`WEBHOOK_REQUESTS_TOTAL`].
pub mod webhook_outcome {
    /// Verified, valid, new: a job was enqueued.
    pub const ACCEPTED: &str = "accepted";
    /// Seen before (same delivery, or same event): 2xx, nothing enqueued.
    pub const DUPLICATE: &str = "duplicate";
    /// Missing or wrong signature or secret token.
    pub const BAD_SIGNATURE: &str = "bad_signature";
    /// Timestamp outside the replay window.
    pub const STALE: &str = "stale";
    /// A valid signature over a body of another Chatwoot account.
    pub const WRONG_ACCOUNT: &str = "wrong_account";
    /// Body over the cap.
    pub const TOO_LARGE: &str = "too_large";
    /// Not JSON, not UTF-8, or the wrong shape.
    pub const MALFORMED: &str = "malformed";
    /// An event or update type we do not act on: 2xx, counted, not enqueued.
    pub const IGNORED: &str = "ignored";
    /// We could not take it (the queue or the database failed): answered 5xx,
    /// or on the Chatwoot route 429 so that an agent bot retries it; account webhooks retry
    /// nothing, so the event may be lost.
    pub const FAILED: &str = "failed";
    /// Every value, for pre-registering series.
    pub const ALL: &[&str] = &[
        ACCEPTED,
        DUPLICATE,
        BAD_SIGNATURE,
        STALE,
        WRONG_ACCOUNT,
        TOO_LARGE,
        MALFORMED,
        IGNORED,
        FAILED,
    ];
}

/// Values of the `outcome` label of [`ERROR_ALERTS_TOTAL`].
pub mod alert_outcome {
    /// A message reached Telegram (an immediate alert or a digest).
    pub const SENT: &str = "sent";
    /// Merged with the same fingerprint already waiting in the digest (its count grew).
    pub const DEDUPLICATED: &str = "deduplicated";
    /// A critical alert whose fingerprint was sent within the rate-limit window, by any
    /// process: counted as a repeat in the next digest.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// A non-critical alert that opened a new line of the next digest.
    pub const BATCHED: &str = "batched";
    /// Matched `LEADQ_ALERT_IGNORED_PATHS` or `LEADQ_ALERT_IGNORED_ERRORS`.
    pub const IGNORED: &str = "ignored";
    /// The sender's queue was full (or closed): the alert was dropped, never blocking.
    pub const DROPPED: &str = "dropped";
    /// Telegram refused the message or could not be reached, or Redis failed.
    pub const FAILED: &str = "failed";
    /// Every value, for pre-registering series.
    pub const ALL: &[&str] = &[
        SENT,
        DEDUPLICATED,
        RATE_LIMITED,
        BATCHED,
        IGNORED,
        DROPPED,
        FAILED,
    ];
}

/// Values of the `state` label of [`QUEUE_DEPTH`].
pub mod state {
    /// Ready to run now.
    pub const PENDING: &str = "pending";
    /// Waiting for a retry delay or a rate limit.
    pub const SCHEDULED: &str = "scheduled";
    /// Leased by a worker.
    pub const RUNNING: &str = "running";
    /// Dead letters kept.
    pub const DEAD: &str = "dead";
    /// Ready but held back: the tenant is paused or at its concurrency cap.
    pub const HELD: &str = "held";
}

// Up to an hour: a job's wait can be long when a queue backs up, and a p99 that cannot read
// above the last bucket hides exactly that.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the recorder's histogram samples are folded into their buckets when nobody
/// scrapes (the exporter's own default when it runs its HTTP listener).
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle),
/// registers the help text of every metric and starts its upkeep.
///
/// Why the upkeep: a histogram keeps every sample it is given (8 bytes each) until they are
/// folded into its buckets, which happens at a scrape or an upkeep. We render `/metrics`
/// ourselves (`build_recorder`), so without upkeep a process nobody scrapes — Prometheus
/// down, or a worker without a scrape job — grows without bound: half a megabyte a second
/// at 2,500 leads/s (docs/bench/processes.md, "Worker memory").
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("non-empty bucket list")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, which we never do.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// A thread of its own (not a task), so the upkeep runs whatever runtime the process has, or
/// none; it sleeps between rounds and lives as long as the process.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        // Metrics still work; only an unscraped process's histograms keep their samples.
        tracing::warn!(error = %e, "Could not start the metrics upkeep thread.");
    }
}

/// Refreshes the process gauges at scrape time: the standard `process_*` set of the Prometheus
/// client conventions (CPU seconds, resident memory, open and maximum file descriptors, start
/// time, threads; from `/proc` via `metrics-process`) and the tokio runtime's workers, global
/// queue depth and alive tasks.
pub fn collect_process() {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let c = metrics_process::Collector::default();
            c.describe();
            c
        })
        .collect();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let m = rt.metrics();
        metrics::gauge!(TOKIO_WORKERS).set(m.num_workers() as f64);
        metrics::gauge!(TOKIO_GLOBAL_QUEUE_DEPTH).set(m.global_queue_depth() as f64);
        metrics::gauge!(TOKIO_ALIVE_TASKS).set(m.num_alive_tasks() as f64);
    }
}

/// Creates the job series of `kind` at zero, so dashboards and `rate()` alerts see them from
/// the first scrape instead of after the first event.
pub fn register_job_series(kind: &'static str) {
    for o in [
        outcome::COMPLETED,
        outcome::RETRIED,
        outcome::DEAD,
        outcome::RATE_LIMITED,
    ] {
        metrics::counter!(JOBS_TOTAL, label::KIND => kind, label::OUTCOME => o).increment(0);
    }
    metrics::counter!(JOB_RETRIES_TOTAL, label::KIND => kind).increment(0);
    metrics::counter!(QUEUE_LOST_LEASES_TOTAL, label::KIND => kind).increment(0);
    let _ = metrics::histogram!(JOB_DURATION_SECONDS, label::KIND => kind);
    let _ = metrics::histogram!(JOB_WAIT_SECONDS, label::KIND => kind);
    for p in phase::ALL {
        let _ = metrics::histogram!(JOB_PHASE_SECONDS, label::KIND => kind, label::PHASE => p);
    }
    let _ = metrics::histogram!(JOB_TURNAROUND_SECONDS, label::KIND => kind);
}

/// Creates the security, integration and queue-error series at zero, so `increase()` alerts
/// see the first event after a start (see [`register_job_series`]).
pub fn register_event_series() {
    for kind in ["bad_signature", "unauthorized", "cross_tenant_activity"] {
        metrics::counter!(SECURITY_EVENTS_TOTAL, label::KIND => kind).increment(0);
    }
    for reason in ["auth_lockout", "unauthenticated_rate"] {
        metrics::counter!(EDGE_REFUSALS_TOTAL, label::REASON => reason).increment(0);
    }
    for source in ["chatwoot", "telegram"] {
        metrics::counter!(WEBHOOK_OVER_BUDGET_TOTAL, label::SOURCE => source).increment(0);
    }
    for result in ["ok", "rejected", "error"] {
        metrics::counter!(CRM_TOKEN_REFRESHES_TOTAL, label::RESULT => result).increment(0);
    }
    for policy in [
        "ten_secondly_rolling",
        "secondly",
        "daily",
        "other",
        "window_exhausted",
    ] {
        metrics::counter!(CRM_RATE_LIMITED_TOTAL, label::POLICY => policy).increment(0);
    }
    for status in ["200", "207", "401", "403", "429", "500", "timeout", "error"] {
        metrics::counter!(CRM_REQUESTS_TOTAL, label::STATUS => status).increment(0);
    }
}

/// Creates the error-alert series at zero (see [`register_job_series`]).
pub fn register_alert_series() {
    for o in alert_outcome::ALL {
        metrics::counter!(ERROR_ALERTS_TOTAL, label::OUTCOME => *o).increment(0);
    }
    metrics::gauge!(ERROR_ALERTS_BLOCKED).set(0.0);
}

/// Creates every webhook series at zero (see [`register_job_series`]).
pub fn register_webhook_series() {
    for source in ["chatwoot", "telegram"] {
        for o in webhook_outcome::ALL {
            metrics::counter!(WEBHOOK_REQUESTS_TOTAL, label::SOURCE => source, label::OUTCOME => *o)
                .increment(0);
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        LEAD_GROUP_COMMITS_TOTAL,
        "Group commits of lead_score jobs (two or more jobs), by outcome."
    );
    metrics::describe_counter!(
        LEAD_GROUP_COMMIT_JOBS_TOTAL,
        "lead_score jobs written by group commits, by outcome."
    );
    metrics::describe_counter!(
        WEBHOOK_REQUESTS_TOTAL,
        "Webhook deliveries, by source and outcome."
    );
    metrics::describe_counter!(CRM_REQUESTS_TOTAL, "CRM API calls, by HTTP status.");
    metrics::describe_histogram!(
        CRM_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "CRM API call duration."
    );
    metrics::describe_counter!(
        CRM_RATE_LIMITED_TOTAL,
        "CRM rate limits hit or anticipated, by policy."
    );
    metrics::describe_counter!(
        CRM_TOKEN_REFRESHES_TOTAL,
        "CRM OAuth token refreshes, by result."
    );
    metrics::describe_counter!(
        TENANT_JOBS_TOTAL,
        "Jobs finished per tenant (bounded label), by kind and outcome."
    );
    metrics::describe_counter!(
        RATE_LIMITED_TOTAL,
        "Requests refused by a per-tenant limit."
    );
    metrics::describe_counter!(AUTH_FAILURES_TOTAL, "Refused credentials, by reason.");
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(JOBS_TOTAL, "Jobs finished, by kind and outcome.");
    describe_counter!(ERROR_ALERTS_TOTAL, "Error alerts to Telegram, by outcome.");
    describe_gauge!(
        ERROR_ALERTS_BLOCKED,
        "1 once Telegram answered 403: this process sends no more alerts."
    );
    describe_histogram!(JOB_DURATION_SECONDS, Unit::Seconds, "Handler run time.");
    describe_histogram!(
        JOB_PHASE_SECONDS,
        Unit::Seconds,
        "Where a run's time goes, by kind and phase."
    );
    describe_histogram!(
        JOB_WAIT_SECONDS,
        Unit::Seconds,
        "Time from when a job was due (enqueue, run_at or the end of a snooze) to the start of its first attempt."
    );
    describe_gauge!(QUEUE_DEPTH, "Jobs per kind and state, read from Redis.");
    describe_counter!(
        SCHEDULE_RUNS_TOTAL,
        "Runs of recurring platform tasks, by result."
    );
    describe_gauge!(
        SCHEDULER_LEADER,
        "1 while this process leads the scheduler."
    );
    describe_gauge!(
        SCHEDULE_LAST_RUN_OK,
        "1 if the recurring task's last run succeeded."
    );
    describe_gauge!(
        SCHEDULE_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the recurring task's last successful run."
    );
    describe_gauge!(
        WORKER_HEARTBEAT_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the worker's last heartbeat."
    );
    describe_counter!(JOB_RETRIES_TOTAL, "Retries scheduled, by kind.");
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by route, method, status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request duration by route."
    );
    describe_counter!(
        QUEUE_REDIS_ERRORS_TOTAL,
        "Queue-engine Redis operations that failed and were retried."
    );
    describe_counter!(
        QUEUE_LOST_LEASES_TOTAL,
        "Acknowledgements refused because another worker holds the lease."
    );
    describe_counter!(
        JOBS_ENQUEUED_TOTAL,
        "Jobs accepted at enqueue, by kind and result."
    );
    describe_counter!(
        TENANT_HTTP_REQUESTS_TOTAL,
        "HTTP requests of a known tenant, by route and status class."
    );
    describe_counter!(
        TENANT_CRM_REQUESTS_TOTAL,
        "CRM calls per tenant, by status class."
    );
    describe_gauge!(
        TENANT_OVERRIDE_INFO,
        "1 per tenant setting that differs from the default."
    );
    describe_gauge!(TOKIO_WORKERS, "Worker threads of the tokio runtime.");
    describe_gauge!(
        TOKIO_GLOBAL_QUEUE_DEPTH,
        "Tasks waiting in the tokio runtime's global queue."
    );
    describe_gauge!(TOKIO_ALIVE_TASKS, "Tasks alive in the tokio runtime.");
    describe_gauge!(DEPENDENCY_UP, "1 when the dependency answered at scrape.");
    describe_histogram!(
        JOB_TURNAROUND_SECONDS,
        Unit::Seconds,
        "Time from enqueue (or run_at, or re-drive) to done (completed or dead)."
    );
    describe_gauge!(SECURITY_CHECK_OK, "1 while the security check passes.");
    describe_gauge!(API_KEYS_EXPIRING, "Active API keys expiring within 7 days.");
    describe_gauge!(CANARY_SUCCESS, "1 if the last canary run succeeded.");
    describe_gauge!(
        CANARY_CONFIGURED,
        "1 when this process is configured to run the canary."
    );
    describe_gauge!(
        CANARY_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of the last canary run."
    );
    describe_gauge!(
        CANARY_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the last successful canary run."
    );
    describe_histogram!(
        CHAT_FIRST_REPLY_SECONDS,
        Unit::Seconds,
        "Chatwoot: incoming message to first agent reply."
    );
}
