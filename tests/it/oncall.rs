//! The on-call side: the security health checks (`GET /v1/health/security` and their gauges),
//! the synthetic canary, `leadq doctor`, and the dependency gauges of `/metrics`.

use std::time::Duration;

use leadq_jobs::ops::{canary, doctor, maintenance, security::Status};
use leadq_platform::config::CanarySettings;
use leadq_testkit::{spawn_app, spawn_app_with, wait_for, TestApp};
use serde_json::Value;

async fn security(app: &TestApp) -> (u16, Value) {
    let r = app
        .client
        .get(format!("{}/v1/health/security", app.address))
        .bearer_auth(app.operator_token())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn status_of<'a>(body: &'a Value, check: &str) -> &'a str {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == check)
        .unwrap_or_else(|| panic!("no check {check} in {body}"))["status"]
        .as_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_health_needs_an_operator_and_names_every_check_without_a_secret() {
    let app = spawn_app().await;
    let anon = app
        .client
        .get(format!("{}/v1/health/security", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let tenant_key = app.get("/v1/health/security", app.key()).await;
    assert_eq!(tenant_key.status(), 403, "a tenant key is not an operator");

    let (code, body) = security(&app).await;
    assert_eq!(code, 200, "{body}");
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, leadq_jobs::ops::security::CHECKS);
    // Never verified yet: the check fails and so does the whole answer.
    assert_eq!(status_of(&body, "audit_verified"), "fail");
    assert_eq!(body["status"], "fail");
    assert_eq!(status_of(&body, "operator_tokens"), "pass");
    assert_eq!(status_of(&body, "signing_keys"), "pass");
    assert_eq!(status_of(&body, "alert_channel"), "skip");
    let text = body.to_string();
    for secret in [
        app.operator_token().to_owned(),
        app.key().to_owned(),
        app.settings.signing_keys().to_spec().expose().to_owned(),
        app.settings.data_keys().to_spec().expose().to_owned(),
    ] {
        assert!(!text.contains(&secret), "a secret leaked into {text}");
    }
    // The gauges follow the checks.
    let metrics = app.text(&format!("{}/metrics", app.address)).await;
    assert!(metrics.contains("leadq_security_check_ok{check=\"audit_verified\"} 0"));
    assert!(metrics.contains("leadq_security_check_ok{check=\"operator_tokens\"} 1"));

    // The scheduler's verification makes the check pass.
    maintenance::audit_verify(&app.db.pool, app.settings.audit_keys())
        .await
        .unwrap();
    let (_, body) = security(&app).await;
    assert_eq!(status_of(&body, "audit_verified"), "pass", "{body}");
    assert_eq!(body["status"], "pass", "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_audit_trail_and_a_chatwoot_tenant_without_secret_fail_their_checks() {
    let app = spawn_app_with(&[("LEADQ_AUDIT_HEARTBEAT_MAX_AGE_SECS", "1")]).await;
    // Every view is audited, so the first call is a heartbeat for the second.
    security(&app).await;
    let (_, body) = security(&app).await;
    assert_eq!(status_of(&body, "audit_heartbeat"), "pass", "{body}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, body) = security(&app).await;
    assert_eq!(status_of(&body, "audit_heartbeat"), "fail", "{body}");

    // An account id without its HMAC secret (as a half-finished manual edit would leave it).
    let mut tx = app.own().await;
    sqlx::query(
        "insert into tenant_integrations (tenant_id, chatwoot_account_id) values ($1, 7)
         on conflict (tenant_id) do update set chatwoot_account_id = 7, chatwoot_secret = null",
    )
    .bind(app.tenant.tenant_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (_, body) = security(&app).await;
    assert_eq!(status_of(&body, "chatwoot_secrets"), "fail", "{body}");
    let detail = body["checks"][2]["detail"].as_str().unwrap();
    assert!(detail.contains(&app.tenant.slug), "{detail}");
    app.stop().await;
}

fn canary_settings(app: &TestApp, timeout: Duration) -> CanarySettings {
    CanarySettings {
        tenant: app.tenant.slug.clone(),
        api_url: app.address.clone(),
        api_key: app.tenant.api_key.clone(),
        timeout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_fires_from_the_scheduler_is_published_and_fails_without_a_worker() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    // No worker: the lead is accepted but never scored.
    let err = canary::run(
        &app.db.pool,
        &http,
        &canary_settings(&app, Duration::from_secs(1)),
        1,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, canary::CanaryError::NotScored(_)), "{err}");
    let metrics = app.text(&format!("{}/metrics", app.address)).await;
    assert!(metrics.contains("leadq_canary_success 0"), "{metrics}");
    // No success recorded, so none to publish. (Read from the row, not from /metrics: the
    // gauges are the test process's, and another test's canary may have succeeded.)
    let record = leadq_platform::checks::last(&app.db.pool, "canary")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.last_ok_at, None);

    // A worker whose scheduler runs the canary every second.
    let mut settings = app.settings.clone();
    settings.canary = Some(canary_settings(&app, Duration::from_secs(10)));
    for s in &mut settings.schedules {
        s.schedule = match s.name {
            "canary" => Some(leadq_platform::config::parse_cron("* * * * * *").unwrap()),
            _ => None,
        };
    }
    let worker = leadq_testkit::TestWorker::spawn(settings).await;
    let record = wait_for("a green canary", Duration::from_secs(20), || async {
        leadq_platform::checks::last(&app.db.pool, "canary")
            .await
            .unwrap()
            .filter(|r| r.ok)
    })
    .await;
    assert!(record.detail.contains("scored"), "{}", record.detail);
    let metrics = app.text(&format!("http://{}/metrics", worker.health)).await;
    assert!(metrics.contains("leadq_canary_success 1"), "{metrics}");
    assert!(metrics.contains("leadq_canary_last_success_timestamp_seconds"));
    // The canary tenant's jobs are not business figures. (The API of this test was started
    // before the tenant existed, so only the worker knows it as the canary.)
    let canary_label = format!("tenant=\"{}\"", app.tenant.slug);
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("leadq_tenant_jobs_total") && l.contains(&canary_label)),
        "the canary tenant appears in per-tenant job metrics"
    );
    worker.stop().await;
    app.stop().await;
}

/// A firing whose previous run has not ended is skipped and counted as a failure: a run that
/// hangs (here the canary, posting to an API that never answers) shows as a failed run
/// (`leadq_schedule_runs_total{result="error"}`, and its kept result) at the next firing.
/// Run beside it, every firing started one more copy, and nothing was counted until each
/// timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_whose_previous_run_still_runs_is_skipped_and_counted() {
    let app = spawn_app().await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let mut settings = app.settings.clone();
    let mut canary = canary_settings(&app, Duration::from_secs(60));
    canary.api_url = silent_url;
    settings.canary = Some(canary);
    for s in &mut settings.schedules {
        s.schedule = match s.name {
            "canary" => Some(leadq_platform::config::parse_cron("* * * * * *").unwrap()),
            _ => None,
        };
    }
    let worker = leadq_testkit::TestWorker::spawn(settings).await;
    // Read from this test's database: the counter is the test process's, and other tests'
    // canaries fail too.
    let record = wait_for("a skipped firing kept", Duration::from_secs(30), || async {
        leadq_platform::checks::last_schedule_runs(&app.db.pool, &["canary"])
            .await
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| !r.ok)
    })
    .await;
    assert_eq!(record.detail, "skipped: the previous run has not ended");
    worker.stop().await;
    held.abort();
    app.stop().await;
}

/// A recurring task's last result is kept in PostgreSQL (`platform_checks`, row
/// `schedule:<name>`) and published as `leadq_schedule_last_run_ok`, so a failure holds until a
/// run succeeds, across firings and leaders: the alert read only an hour of counters, so a
/// daily task that failed resolved an hour later with nothing fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_recurring_task_is_kept_until_a_run_succeeds() {
    let app = spawn_app().await;
    // A port nothing listens on: the canary's post is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let every_second = |settings: &mut leadq_platform::config::Settings| {
        for s in &mut settings.schedules {
            s.schedule = match s.name {
                "canary" => Some(leadq_platform::config::parse_cron("* * * * * *").unwrap()),
                _ => None,
            };
        }
    };
    let last = || async {
        leadq_platform::checks::last_schedule_runs(&app.db.pool, &["canary", "crm_reconcile"])
            .await
            .unwrap()
    };
    // The gauges are the test process's, shared with the other tests' workers: the values
    // are read from this test's database, and only the series' presence from /metrics.
    let published = |metrics: &str| {
        metrics.contains("leadq_schedule_last_run_ok{schedule=\"canary\"}")
            && metrics
                .contains("leadq_schedule_last_success_timestamp_seconds{schedule=\"canary\"}")
    };

    let mut failing = app.settings.clone();
    let mut canary = canary_settings(&app, Duration::from_secs(2));
    canary.api_url = closed_url;
    failing.canary = Some(canary);
    every_second(&mut failing);
    let worker = leadq_testkit::TestWorker::spawn(failing).await;
    wait_for("the failure kept", Duration::from_secs(30), || async {
        last().await.first().filter(|(_, r)| !r.ok).map(|_| ())
    })
    .await;
    worker.stop().await;
    // What the next leader reads: the failure, with no success ever, and nothing for a task
    // that never ran.
    let runs = last().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (schedule, record) = &runs[0];
    assert_eq!(schedule, "canary");
    assert!(!record.ok);
    assert_eq!(record.last_ok_at, None);
    assert!(
        record.detail.starts_with("canary failed"),
        "{}",
        record.detail
    );

    let mut passing = app.settings.clone();
    passing.canary = Some(canary_settings(&app, Duration::from_secs(20)));
    every_second(&mut passing);
    let worker = leadq_testkit::TestWorker::spawn(passing).await;
    let url = format!("http://{}/metrics", worker.health);
    wait_for("the success kept", Duration::from_secs(30), || async {
        last()
            .await
            .first()
            .filter(|(_, r)| r.ok && r.last_ok_at.is_some())
            .map(|_| ())
    })
    .await;
    let metrics = app.text(&url).await;
    assert!(published(&metrics), "{metrics}");
    worker.stop().await;
    app.stop().await;
}

/// The canary deletes its own old leads only, audited: `LEADQ_CANARY_TENANT` naming a real
/// tenant by mistake deleted every lead of it older than an hour, every minute, unaudited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_deletes_only_its_own_old_leads_and_says_so() {
    let app = spawn_app().await;
    let mut tx = app.own().await;
    for id in ["canary-1", "tg-real-customer"] {
        sqlx::query(
            "insert into leads (tenant_id, external_id, source, created_at)
             values ($1, $2, 'telegram', now() - interval '2 hours')",
        )
        .bind(app.tenant.tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let http = reqwest::Client::new();
    let settings = canary_settings(&app, Duration::from_millis(300));
    let _ = canary::run(&app.db.pool, &http, &settings, 2).await;
    let left: Vec<String> = sqlx::query_scalar(
        "select external_id from leads where created_at < now() - interval '1 hour'",
    )
    .fetch_all(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(left, ["tg-real-customer"]);
    let details: serde_json::Value = sqlx::query_scalar(
        "select details from audit_log where action = 'canary.purge' and actor = 'system:canary'",
    )
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(details["deleted"], 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_say_which_dependency_is_down() {
    let app = spawn_app().await;
    let metrics = app.text(&format!("{}/metrics", app.address)).await;
    assert!(metrics.contains("leadq_dependency_up{dependency=\"postgres\"} 1"));
    assert!(metrics.contains("leadq_dependency_up{dependency=\"redis\"} 1"));
    // Process and runtime figures, refreshed at the scrape.
    for name in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "leadq_tokio_workers ",
        "leadq_tokio_global_queue_depth ",
    ] {
        assert!(metrics.contains(name), "no {name}in /metrics");
    }
    app.stop().await;
}

fn statuses(r: &doctor::Report) -> Vec<(&'static str, Status)> {
    r.checks.iter().map(|c| (c.name, c.status)).collect()
}

fn status(r: &doctor::Report, name: &str) -> Status {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_running_platform_and_names_what_is_down() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    let http = reqwest::Client::new();
    let opts = doctor::Options {
        canary_max_age: Duration::from_secs(600),
        ..Default::default()
    };
    let report = doctor::run(&app.settings, &opts, &http).await;
    assert_eq!(report.status, Status::Pass, "{:?}", statuses(&report));
    for name in [
        "postgres",
        "postgres_role",
        "migrations",
        "indexes",
        "redis",
        "keys",
        "audit_chains",
        "workers",
    ] {
        assert_eq!(status(&report, name), Status::Pass, "{name}");
    }
    assert_eq!(status(&report, "canary"), Status::Skip);
    assert_eq!(status(&report, "prometheus"), Status::Skip);

    // An index build that failed half-way, as an interrupted migration's would.
    let owner = leadq_platform::db::connect(
        &leadq_platform::secret::Secret::new(app.db.owner_url.clone()),
        1,
    )
    .await
    .unwrap();
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
    sqlx::query(
        "insert into leads (tenant_id, external_id, source)
         values ($1, 'doctor-1', 'telegram'), ($1, 'doctor-2', 'telegram')",
    )
    .bind(app.tenant.tenant_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::raw_sql("create unique index concurrently doctor_left_invalid on leads (source)")
        .execute(&owner)
        .await
        .expect_err("two leads share a source");
    let report = doctor::run(&app.settings, &opts, &http).await;
    assert_eq!(status(&report, "indexes"), Status::Fail);
    assert_eq!(report.status, Status::Fail);
    let detail = &report
        .checks
        .iter()
        .find(|c| c.name == "indexes")
        .unwrap()
        .detail;
    assert!(detail.contains("doctor_left_invalid"), "{detail}");
    sqlx::raw_sql("drop index concurrently doctor_left_invalid")
        .execute(&owner)
        .await
        .unwrap();
    owner.close().await;
    let report = doctor::run(&app.settings, &opts, &http).await;
    assert_eq!(status(&report, "indexes"), Status::Pass);
    worker.stop().await;

    // No worker left for any kind.
    let report = doctor::run(&app.settings, &opts, &http).await;
    assert_eq!(status(&report, "workers"), Status::Fail);
    assert_eq!(report.status, Status::Fail);

    // Redis and PostgreSQL unreachable (nothing listens on port 9).
    let mut down = app.settings.clone();
    down.redis_url = Some(leadq_platform::secret::Secret::new("redis://127.0.0.1:9/"));
    down.database_url = Some(leadq_platform::secret::Secret::new(
        "postgres://leadq:leadq@127.0.0.1:9/leadq",
    ));
    let report = doctor::run(&down, &opts, &http).await;
    assert_eq!(report.status, Status::Fail);
    for name in [
        "postgres",
        "migrations",
        "indexes",
        "redis",
        "workers",
        "audit_chains",
    ] {
        assert_eq!(status(&report, name), Status::Fail, "{name}");
    }
    // Prometheus named but unreachable.
    let opts = doctor::Options {
        prometheus: Some("http://127.0.0.1:9".into()),
        ..opts
    };
    let report = doctor::run(&app.settings, &opts, &http).await;
    assert_eq!(status(&report, "prometheus"), Status::Fail);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_the_command_reports_a_missing_key_as_json_and_exits_1() {
    let app = spawn_app().await;
    let out = crate::leadq_cmd(&app)
        .env_remove("LEADQ_DATA_KEYS")
        .args(["doctor", "--json"])
        .output()
        .expect("run leadq doctor");
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["status"], "fail");
    assert_eq!(report["checks"][0]["name"], "config");
    let detail = report["checks"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("LEADQ_DATA_KEYS"), "{detail}");
    app.stop().await;
}

/// Transactions the test database has counted so far, once every connection has flushed its
/// counters (an idle backend flushes them within a second).
async fn transactions(app: &TestApp) -> i64 {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query_scalar(
        "select xact_commit + xact_rollback from pg_stat_database
          where datname = current_database()",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_checks_read_many_tenants_in_a_few_transactions_each_in_its_own_scope() {
    use leadq_jobs::ops::security::{self, Inputs};
    let app = spawn_app().await;
    // 700 more tenants (two statements' worth), two of them with something to report.
    let mut owner = app.db.owner_tx(app.tenant.tenant_id).await;
    let others: Vec<uuid::Uuid> = sqlx::query_scalar(
        "insert into tenants (slug) select 'many-' || i from generate_series(1, 700) as i
         returning id",
    )
    .fetch_all(&mut *owner)
    .await
    .unwrap();
    owner.commit().await.unwrap();
    let (telegram, expiring) = (others[10], others[650]);
    let mut tx = app.db.owner_tx(telegram).await;
    sqlx::query(
        "insert into tenant_integrations (tenant_id, telegram_secret_sha256)
         values ($1, sha256('token'::bytea))",
    )
    .bind(telegram)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = app.db.owner_tx(expiring).await;
    sqlx::query(
        "insert into api_keys (tenant_id, prefix, key_hash, scopes, expires_at)
         select $1, 'expsoon1', sha256('x'::bytea), '{}', now() + interval '3 days'",
    )
    .bind(expiring)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // The test tenant: a Chatwoot account without its secret.
    let mut tx = app.own().await;
    sqlx::query("insert into tenant_integrations (tenant_id, chatwoot_account_id) values ($1, 7)")
        .bind(app.tenant.tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let (sealer, http) = (app.sealer(), reqwest::Client::new());
    let inputs = Inputs {
        pool: &app.db.pool,
        sealer: &sealer,
        settings: &app.settings,
        http: &http,
    };
    let before = transactions(&app).await;
    let checks = security::run(inputs).await;
    let used = transactions(&app).await - before;
    let check = |name: &str| checks.iter().find(|c| c.name == name).unwrap();
    // Each tenant's facts are its own: the one finding of each check names its tenant only.
    let chatwoot = check("chatwoot_secrets");
    assert_eq!(chatwoot.status, Status::Fail, "{}", chatwoot.detail);
    assert!(
        chatwoot.detail.contains(&app.tenant.slug) && !chatwoot.detail.contains("many-"),
        "{}",
        chatwoot.detail
    );
    let telegram = check("telegram_secrets");
    assert_eq!(telegram.status, Status::Pass);
    assert!(
        telegram.detail.starts_with("1 tenant(s)"),
        "{}",
        telegram.detail
    );
    let keys = check("api_keys_expiring");
    assert_eq!(keys.status, Status::Warn);
    let slug: String = sqlx::query_scalar("select slug from tenants where id = $1")
        .bind(expiring)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(
        keys.detail.contains(&format!("({slug}: 1)")),
        "{}",
        keys.detail
    );
    assert!(!keys.detail.contains(&app.tenant.slug), "{}", keys.detail);
    assert_eq!(check("audit_heartbeat").status, Status::Pass);
    // A transaction per tenant is hundreds (2,288 here when each tenant's facts and newest
    // audit entry were read in transactions of their own; 10 now).
    assert!(
        used <= 60,
        "the checks of 701 tenants used {used} transactions"
    );
    app.stop().await;
}
