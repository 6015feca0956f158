//! Per-tenant limits: changed through the queue, enforced at ingest, isolated per tenant.

use std::time::Duration;

use leadq_testkit::{sample_lead, spawn_app, wait_for, TestApp};
use serde_json::Value;

fn set_limits(app: &TestApp, slug: &str, per_second: &str, burst: &str, per_day: &str) -> bool {
    crate::leadq_cmd(app)
        .args(["tenant", "set-limits", slug, "--per-second", per_second])
        .args(["--burst", burst, "--leads-per-day", per_day])
        .env(
            "LEADQ_DATA_KEYS",
            app.settings.data_keys().to_spec().expose(),
        )
        .env("LEADQ_OPERATOR", "billing-bot")
        .status()
        .unwrap()
        .success()
}

async fn limits_of(app: &TestApp, tenant: uuid::Uuid) -> leadq_jobs::ops::limits::Limits {
    leadq_jobs::ops::limits::get(&app.db.pool, tenant)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_a_billing_limit_goes_through_the_queue_and_leaves_other_tenants_untouched() {
    let app = spawn_app().await;
    // Operators must be registered, with `limits`, for their billing jobs to run.
    app.db.register_operator("billing-bot", &["limits"]).await;
    let b = app.other_tenant().await;
    let worker = app.spawn_worker().await;
    let b_before = limits_of(&app, b.tenant_id).await;

    assert!(set_limits(&app, &app.tenant.slug, "1", "2", "3"));
    let a = wait_for("A's new limits", Duration::from_secs(20), || async {
        let l = limits_of(&app, app.tenant.tenant_id).await;
        (l.ingest_burst == 2).then_some(l)
    })
    .await;
    assert_eq!(
        (a.ingest_per_second, a.ingest_burst, a.leads_per_day),
        (1, 2, 3)
    );
    assert_eq!(
        limits_of(&app, b.tenant_id).await,
        b_before,
        "B is untouched"
    );

    // Audited in A's trail, with the operator as actor and old/new values.
    let (actor, details): (String, Value) = sqlx::query_as(
        "select actor, details from audit_log where action = 'billing.limit_update'",
    )
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(actor, "operator:billing-bot");
    assert_eq!(details["new"]["leads_per_day"], 3);
    let in_b: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'billing.limit_update'")
            .fetch_one(&mut *app.scoped(b.tenant_id).await)
            .await
            .unwrap();
    assert_eq!(in_b, 0);

    // Enforced at ingest: a burst of 2, then 429 with Retry-After; B is not slowed down.
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(
                app.post_lead(app.key(), &sample_lead(&format!("tg-{i}")))
                    .await
                    .status()
                    .as_u16(),
            );
        }
        v
    };
    assert_eq!(codes, vec![202, 202, 429]);
    let res = app.post_lead(app.key(), &sample_lead("tg-x")).await;
    assert_eq!(res.status(), 429);
    assert!(
        res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    for i in 0..5 {
        let res = app
            .post_lead(b.api_key.expose(), &sample_lead(&format!("b-{i}")))
            .await;
        assert_eq!(res.status(), 202, "B keeps its own default limits");
    }

    // The daily quota (3) is enforced once the rate allows another request.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.post_lead(app.key(), &sample_lead("tg-3"))
            .await
            .status(),
        202
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = app.post_lead(app.key(), &sample_lead("tg-4")).await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");

    // A tenant's own key cannot cause an operator-only job.
    let mut env = leadq_queue::envelope::Envelope {
        schema_version: 1,
        message_id: "self-raise".into(),
        tenant_id: app.tenant.tenant_id,
        user_id: format!("api_key:{}", app.tenant.key_id),
        action: "update_billing_limit".into(),
        payload: serde_json::json!({"ingest_per_second": 1000, "ingest_burst": 1000,
                                    "leads_per_day": 1000000}),
        timestamp: chrono::Utc::now(),
        correlation_id: "self-raise".into(),
        trace_context: Default::default(),
        signature: None,
    };
    env.signature = None;
    app.queue
        .enqueue(vec![leadq_queue::NewJob {
            envelope: env,
            run_at: None,
            priority: Default::default(),
        }])
        .await
        .unwrap();
    let dead = wait_for("the refusal", Duration::from_secs(20), || async {
        let d = app
            .queue
            .dead_letters("update_billing_limit", 5)
            .await
            .unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead[0].reason, "unauthorized");
    assert_eq!(limits_of(&app, app.tenant.tenant_id).await.leads_per_day, 3);
    worker.stop().await;
    app.stop().await;
}

fn set_kind(app: &TestApp, slug: &str, mode: &str) -> bool {
    crate::leadq_cmd(app)
        .args(["tenant", "set-kind", slug, "lead_score", mode])
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_runs_in_shadow_mode_or_is_disabled_per_tenant() {
    let app = spawn_app().await;
    let b = app.other_tenant().await;
    let worker = app.spawn_worker().await;

    assert!(set_kind(&app, &app.tenant.slug, "shadow"));
    assert_eq!(
        app.post_lead(app.key(), &sample_lead("tg-s"))
            .await
            .status(),
        202
    );
    assert_eq!(
        app.post_lead(b.api_key.expose(), &sample_lead("tg-s"))
            .await
            .status(),
        202
    );
    wait_for("both jobs", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 2).then_some(())
    })
    .await;
    // Shadow: the would-be outcome is recorded, nothing is stored. B runs normally.
    assert_eq!(app.get("/v1/leads/tg-s", app.key()).await.status(), 404);
    assert_eq!(
        app.get("/v1/leads/tg-s", b.api_key.expose()).await.status(),
        200
    );
    let (details,): (Value,) =
        sqlx::query_as("select details from audit_log where action = 'lead.score_shadow'")
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
    assert_eq!(details["would_score"], 95);

    // Disabled: refused as unauthorized, not retried.
    assert!(set_kind(&app, &app.tenant.slug, "disabled"));
    assert_eq!(
        app.post_lead(app.key(), &sample_lead("tg-d"))
            .await
            .status(),
        202
    );
    let dead = wait_for("the refusal", Duration::from_secs(20), || async {
        let d = app.queue.dead_letters("lead_score", 5).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].attempts),
        ("unauthorized", 1)
    );
    assert!(!set_kind(&app, "no-such-tenant", "enabled"));
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_limits_refuses_an_operator_the_worker_would_refuse_and_enqueues_nothing() {
    let app = spawn_app().await;
    app.db.register_operator("viewer", &["console"]).await;
    let run = |operator: &str| {
        crate::leadq_cmd(&app)
            .args([
                "tenant",
                "set-limits",
                &app.tenant.slug,
                "--per-second",
                "1",
            ])
            .args(["--burst", "2", "--leads-per-day", "3"])
            .env("LEADQ_OPERATOR", operator)
            .output()
            .unwrap()
    };
    for (operator, says) in [
        ("cli", "is not registered"),
        ("viewer", "lacks the `limits` permission"),
    ] {
        let out = run(operator);
        assert!(!out.status.success(), "{operator}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{operator}: {stderr}");
    }
    let queued = app.queue.counts("update_billing_limit").await.unwrap();
    assert_eq!(queued.pending + queued.dead, 0, "nothing enqueued");
    app.stop().await;
}
