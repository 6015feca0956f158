//! Registered operators: an operator token works only for a registered, enabled operator with
//! the route's permission, and an `operator:<name>` job runs only for a registered, enabled
//! operator holding the kind's permission. The registry is managed with `leadq operator`.

use std::time::Duration;

use leadq_queue::envelope::Envelope;
use leadq_queue::NewJob;
use leadq_testkit::{spawn_app_with, wait_for, TestApp};
use serde_json::Value;

fn token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `leadq operator <args>` as `LEADQ_OPERATOR=root`: (exit code, stdout).
fn operator_cmd(app: &TestApp, args: &[&str]) -> (i32, String) {
    let out = crate::leadq_cmd(app)
        .arg("operator")
        .args(args)
        .env("LEADQ_OPERATOR", "root")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn code_of(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_token_is_refused_unless_its_operator_is_registered_enabled_and_permitted() {
    let (ghost, viewer) = (token(), token());
    let tokens = format!("oncall:{},ghost:{ghost},viewer:{viewer}", token());
    let app = spawn_app_with(&[("LEADQ_OPERATOR_TOKENS", &tokens)]).await;

    // Unregistered: a valid token, refused with a stable code.
    let res = app.get("/v1/status", &ghost).await;
    assert_eq!(code_of(res).await, (403, "operator_not_registered".into()));

    // Registered with `console` only: the status view, but not the dead letters.
    let (rc, out) = operator_cmd(&app, &["add", "viewer", "--permissions", "console"]);
    assert_eq!(rc, 0, "{out}");
    let added: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(added["permissions"], serde_json::json!(["console"]));
    assert_eq!(app.get("/v1/status", &viewer).await.status(), 200);
    let res = app.get("/v1/dlq/lead_score", &viewer).await;
    assert_eq!(
        code_of(res).await,
        (403, "operator_lacks_permission".into())
    );

    // Disabled: refused at once (no cache); enabled again: allowed at once.
    assert_eq!(operator_cmd(&app, &["disable", "viewer"]).0, 0);
    let res = app.get("/v1/status", &viewer).await;
    assert_eq!(code_of(res).await, (403, "operator_disabled".into()));
    assert_eq!(operator_cmd(&app, &["enable", "viewer"]).0, 0);
    assert_eq!(app.get("/v1/status", &viewer).await.status(), 200);

    // Bad input exits 2; the list shows every operator.
    assert_eq!(operator_cmd(&app, &["add", "viewer"]).0, 2, "a duplicate");
    assert_eq!(
        operator_cmd(&app, &["add", "x", "--permissions", "root"]).0,
        2
    );
    assert_eq!(operator_cmd(&app, &["disable", "nobody"]).0, 2);
    let (rc, out) = operator_cmd(&app, &["list"]);
    assert_eq!(rc, 0);
    let names: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["oncall", "viewer"]);

    // Every change is audited as a platform event, by the acting operator.
    let audited: Vec<(String, String, String)> = sqlx::query_as(
        "select action, actor, subject from audit_log
          where action like 'operator.%' and actor = 'operator:root' order by id",
    )
    .fetch_all(&mut *app.platform().await)
    .await
    .unwrap();
    let actions: Vec<&str> = audited.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["operator.add", "operator.disable", "operator.enable"]
    );
    assert!(audited.iter().all(|(_, _, s)| s == "operator:viewer"));
    app.stop().await;
}

/// Enqueues a signed `update_billing_limit` job of the app's tenant caused by `user_id`.
async fn billing_job(app: &TestApp, user_id: &str, per_day: u32) {
    let env = Envelope::new(
        app.tenant.tenant_id,
        user_id,
        leadq_jobs::kinds::UPDATE_BILLING_LIMIT,
        serde_json::json!({"ingest_per_second": 5, "ingest_burst": 10, "leads_per_day": per_day}),
    )
    .message_id(format!("limits-{user_id}"));
    app.queue.enqueue(vec![NewJob::now(env)]).await.unwrap();
}

fn unauthorized_count(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("leadq_security_events_total{kind=\"unauthorized\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_job_runs_only_for_a_registered_enabled_operator_holding_the_permission() {
    let app = spawn_app_with(&[]).await;
    app.db.register_operator("billing", &["limits"]).await;
    app.db
        .register_operator("support", &["dlq", "console"])
        .await;
    app.db.register_operator("former", &["limits"]).await;
    assert_eq!(operator_cmd(&app, &["disable", "former"]).0, 0);
    let worker = app.spawn_worker().await;
    let metrics_url = format!("http://{}/metrics", worker.health);
    let before = unauthorized_count(&app.text(&metrics_url).await);

    // Unknown, lacking the permission, disabled: each dead-lettered as unauthorized.
    for user in ["operator:ghost", "operator:support", "operator:former"] {
        billing_job(&app, user, 7).await;
    }
    let dead = wait_for("three refusals", Duration::from_secs(20), || async {
        let d = app
            .queue
            .dead_letters("update_billing_limit", 10)
            .await
            .unwrap();
        (d.len() == 3).then_some(d)
    })
    .await;
    assert!(dead.iter().all(|d| d.reason == "unauthorized"), "{dead:?}");
    let limits = leadq_jobs::ops::limits::get(&app.db.pool, app.tenant.tenant_id)
        .await
        .unwrap();
    assert_ne!(limits.leads_per_day, 7, "a refused job changed the limits");
    // Audited (in the tenant's trail, just after the dead letter) and counted.
    wait_for(
        "three audited refusals",
        Duration::from_secs(10),
        || async {
            let audited: i64 = sqlx::query_scalar(
                "select count(*) from audit_log
              where action = 'job.dead_letter' and outcome = 'unauthorized'",
            )
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
            (audited == 3).then_some(())
        },
    )
    .await;
    let after = unauthorized_count(&app.text(&metrics_url).await);
    assert!(after >= before + 3.0, "{before} -> {after}");

    // The operator with `limits` is obeyed.
    billing_job(&app, "operator:billing", 9).await;
    wait_for("the new limits", Duration::from_secs(20), || async {
        let l = leadq_jobs::ops::limits::get(&app.db.pool, app.tenant.tenant_id)
            .await
            .unwrap();
        (l.leads_per_day == 9).then_some(())
    })
    .await;
    worker.stop().await;
    app.stop().await;
}
