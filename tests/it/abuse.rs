//! Cross-tenant abuse detection: one principal acting on, or refused for, many tenants within
//! a window raises one `security.cross_tenant_activity` event (audited, counted); routine
//! multi-tenant work below the threshold does not.

use std::time::Duration;

use leadq_platform::tenant;
use leadq_queue::envelope::Envelope;
use leadq_queue::NewJob;
use leadq_testkit::{spawn_app_with, wait_for, TestApp};

/// Platform audit rows of cross-tenant activity by `actor`: (outcome, details).
async fn events(app: &TestApp, actor: &str) -> Vec<(String, serde_json::Value)> {
    sqlx::query_as(
        "select outcome, details from audit_log
          where action = 'security.cross_tenant_activity' and actor = $1 order by id",
    )
    .bind(actor)
    .fetch_all(&mut *app.platform().await)
    .await
    .unwrap()
}

fn cross_tenant_count(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("leadq_security_events_total{kind=\"cross_tenant_activity\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `n` new tenants of the app's database.
async fn tenants(app: &TestApp, n: usize) -> Vec<uuid::Uuid> {
    let mut out = Vec::new();
    for i in 0..n {
        let slug = format!("x{i}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        out.push(
            tenant::create(&app.db.pool, &slug, "test")
                .await
                .unwrap()
                .tenant_id,
        );
    }
    out
}

/// An `update_billing_limit` job for each of `tenants`, caused by `operator`.
async fn billing_jobs(app: &TestApp, operator: &str, tenants: &[uuid::Uuid]) {
    let jobs = tenants
        .iter()
        .map(|t| {
            NewJob::now(
                Envelope::new(
                    *t,
                    operator,
                    leadq_jobs::kinds::UPDATE_BILLING_LIMIT,
                    serde_json::json!({"ingest_per_second": 5, "ingest_burst": 10,
                                       "leads_per_day": 1000}),
                )
                .message_id(format!("limits-{t}")),
            )
        })
        .collect();
    app.queue.enqueue(jobs).await.unwrap();
}

async fn wait_done(app: &TestApp, n: u64) {
    wait_for("the billing jobs", Duration::from_secs(30), || async {
        let c = app
            .queue
            .counts(leadq_jobs::kinds::UPDATE_BILLING_LIMIT)
            .await
            .unwrap();
        (c.done + c.dead >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operator_touching_twenty_tenants_in_a_minute_raises_one_event() {
    let app = spawn_app_with(&[]).await;
    app.db.register_operator("sweeper", &["limits"]).await;
    let worker = app.spawn_worker().await;
    let metrics_url = format!("http://{}/metrics", worker.health);
    let before = cross_tenant_count(&app.text(&metrics_url).await);

    let many = tenants(&app, 20).await;
    billing_jobs(&app, "operator:sweeper", &many).await;
    wait_done(&app, 20).await;

    // Once per window, not once per job: the 10th tenant raised it, the next ten did not.
    let raised = wait_for("the audited event", Duration::from_secs(10), || async {
        let e = events(&app, "operator:sweeper").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].0, "raised");
    assert_eq!(raised[0].1["threshold"], 10);
    assert!(raised[0].1["distinct_tenants"].as_u64().unwrap() >= 10);
    let after = cross_tenant_count(&app.text(&metrics_url).await);
    assert!(after >= before + 1.0, "{before} -> {after}");
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routine_multi_tenant_operator_work_below_the_threshold_raises_nothing() {
    let app = spawn_app_with(&[]).await;
    app.db.register_operator("rota", &["limits"]).await;
    let worker = app.spawn_worker().await;
    // Five tenants, each touched three times: 15 jobs, but 5 distinct tenants.
    let few = tenants(&app, 5).await;
    for round in 0..3 {
        let jobs: Vec<NewJob> = few
            .iter()
            .map(|t| {
                NewJob::now(
                    Envelope::new(
                        *t,
                        "operator:rota",
                        leadq_jobs::kinds::UPDATE_BILLING_LIMIT,
                        serde_json::json!({"ingest_per_second": 5, "ingest_burst": 10,
                                           "leads_per_day": 1000 + round}),
                    )
                    .message_id(format!("limits-{t}-{round}")),
                )
            })
            .collect();
        app.queue.enqueue(jobs).await.unwrap();
    }
    wait_done(&app, 15).await;
    // The same operator sweeping further would be seen: prove the watch is live by reading
    // the window's count through a sighting of a sixth tenant, below the threshold still.
    let s = app
        .queue
        .sighting(
            "xtenant",
            "operator:rota",
            "probe",
            Duration::from_secs(60),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        s.distinct, 6,
        "the five tenants were recorded, and the probe"
    );
    assert!(!s.raised);
    assert!(events(&app, "operator:rota").await.is_empty());
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_failing_authentication_against_many_tenants_raises_an_event() {
    // The lockout is set high so that the sightings, not the lockout, are under test.
    let app = spawn_app_with(&[("LEADQ_AUTH_FAILURE_LIMIT", "100")]).await;
    for i in 0..12u32 {
        // A well-formed key of an unknown prefix each time: twelve "tenants" guessed.
        let key = format!("lq_{:012x}_{}", 0xabc000 + i, "0".repeat(64));
        let res = app.get("/v1/leads/x", &key).await;
        assert_eq!(res.status(), 401);
    }
    let raised = wait_for("the audited event", Duration::from_secs(10), || async {
        let e = events(&app, "address:127.0.0.1").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    // The same bad key over and over is one tenant, however often: no further event.
    app.stop().await;
}
