//! Integration tests: one binary (faster to link), real PostgreSQL and Redis (from
//! `scripts/test`), a fresh database and queue prefix per test.

mod abuse;
mod admission;
mod alerts;
mod api_auth;
mod api_leads;
mod audit;
mod audit_tail;
mod authz_cache;
mod bench;
mod billing;
mod chaos;
mod chat_sla;
mod cluster;
mod config_check;
mod console;
mod console_api;
mod crm;
mod crm_answers;
mod crm_erase;
mod dlq;
mod edge;
mod engine;
mod erase;
mod hostile;
mod keys;
mod lead_messages;
mod lead_store;
mod limits;
mod observability;
mod oncall;
mod openapi;
mod operators;
mod payload_versions;
mod pii_at_rest;
mod process;
mod read_plans;
mod roles;
mod rollback;
mod runlog;
mod schedule;
mod secrets;
mod security;
mod sentry;
mod shadow;
mod tenant_context;
mod tls;
mod tracing;
mod webhooks;
mod worker_faults;

/// A connection to the tests' Redis (`REDIS_URL`), for looking at what the queue holds.
pub(crate) async fn redis_conn() -> redis::aio::MultiplexedConnection {
    #[allow(clippy::disallowed_methods)]
    let url = std::env::var("REDIS_URL").unwrap();
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The real `leadq` binary, with the environment of `app`: its database, Redis key space and
/// keys, quiet logs. Tests add the subcommand and anything else they need.
pub(crate) fn leadq_cmd(app: &leadq_testkit::TestApp) -> std::process::Command {
    leadq_cmd_at(env!("CARGO_BIN_EXE_leadq"), app)
}

/// Runs `leadq <args>` with [`leadq_cmd`]'s environment plus `env`, asserts it succeeded, and
/// returns its output.
pub(crate) fn leadq_ok(
    app: &leadq_testkit::TestApp,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let out = leadq_cmd(app)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run leadq");
    assert!(
        out.status.success(),
        "leadq {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`leadq_cmd`] for the `leadq` binary at `bin` (another release's, in `rollback`).
pub(crate) fn leadq_cmd_at(bin: &str, app: &leadq_testkit::TestApp) -> std::process::Command {
    #[allow(clippy::disallowed_methods)]
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL (run through scripts/test)");
    let mut cmd = std::process::Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_URL", redis)
        .env("LEADQ_QUEUE_PREFIX", &app.settings.queue.prefix)
        .env(
            "LEADQ_SIGNING_KEYS",
            app.settings.signing_keys().to_spec().expose(),
        )
        .env(
            "LEADQ_DATA_KEYS",
            app.settings.data_keys().to_spec().expose(),
        )
        .env(
            "LEADQ_AUDIT_KEYS",
            app.settings.audit_keys().to_spec().expose(),
        )
        .env(
            "LEADQ_PII_INDEX_KEYS",
            app.settings.pii_index_keys().to_spec().expose(),
        )
        .env("LEADQ_LOG", "error");
    cmd
}
