//! Tenant isolation through the queue: the worker runs only genuine, authorized jobs.

use std::time::Duration;

use chrono::Utc;
use leadq_platform::keyring::Keyring;
use leadq_queue::envelope::{Envelope, SCHEMA_VERSION};
use leadq_queue::signing::Signer;
use leadq_testkit::{sample_lead, signer, spawn_app, wait_for, TestApp};
use serde_json::Value;

/// Writes a job straight into Redis, as an attacker with Redis access would.
async fn inject(app: &TestApp, raw: &str) -> String {
    let mut conn = crate::redis_conn().await;
    let tag = format!("{{{}:lead_score}}", app.settings.queue.prefix);
    let id = uuid::Uuid::now_v7().to_string();
    let _: () = redis::pipe()
        .hset(format!("{tag}:jobs"), &id, raw)
        .lpush(format!("{tag}:ready"), &id)
        .lpush(format!("{tag}:wake"), "1")
        .query_async(&mut conn)
        .await
        .unwrap();
    id
}

fn envelope_for(tenant: uuid::Uuid, external_id: &str) -> Envelope {
    Envelope {
        schema_version: SCHEMA_VERSION,
        message_id: format!("evil-{external_id}"),
        tenant_id: tenant,
        user_id: "api_key:00000000-0000-0000-0000-000000000000".into(),
        action: "lead_score".into(),
        payload: sample_lead(external_id),
        timestamp: Utc::now(),
        correlation_id: "evil".into(),
        trace_context: Default::default(),
        signature: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_injected_into_redis_is_never_executed() {
    let app = spawn_app().await;
    let victim = app.other_tenant().await;
    let worker = app.spawn_worker().await;

    // 1. Unsigned, for the victim tenant.
    let unsigned = serde_json::to_string(&envelope_for(victim.tenant_id, "x-unsigned")).unwrap();
    // 2. Signed with the real key for the attacker's own tenant, then re-pointed at the victim.
    let mut own = envelope_for(app.tenant.tenant_id, "x-altered");
    signer(&app.settings).sign(&mut own).unwrap();
    let altered = serde_json::to_string(&own).unwrap().replace(
        &app.tenant.tenant_id.to_string(),
        &victim.tenant_id.to_string(),
    );
    // 3. Signed with a key of the same id that is not ours.
    let mut forged = envelope_for(victim.tenant_id, "x-forged");
    Signer::new(Keyring::random("test"))
        .sign(&mut forged)
        .unwrap();
    let forged = serde_json::to_string(&forged).unwrap();

    let mut ids = Vec::new();
    for raw in [&unsigned, &altered, &forged] {
        ids.push(inject(&app, raw).await);
    }
    let dead = wait_for("three dead letters", Duration::from_secs(20), || async {
        let d = app.queue.dead_letters("lead_score", 10).await.unwrap();
        (d.len() == 3).then_some(d)
    })
    .await;
    assert!(dead.iter().all(|d| d.reason == "bad_signature"), "{dead:?}");

    // Nothing ran: no lead, no job run, for either tenant.
    for tenant in [app.tenant.tenant_id, victim.tenant_id] {
        let mut tx = app.scoped(tenant).await;
        let leads: i64 = sqlx::query_scalar("select count(*) from leads")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let runs: i64 = sqlx::query_scalar("select count(*) from job_runs")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!((leads, runs), (0, 0));
    }

    // Each refusal is audited (as a platform event naming the claimed tenant) and counted.
    let audited: Vec<(String, Value)> =
        wait_for("three audit rows", Duration::from_secs(10), || async {
            let rows: Vec<(String, Value)> = sqlx::query_as(
                "select subject, details from audit_log where action = 'security.job_rejected'
              and outcome = 'bad_signature' order by id",
            )
            .fetch_all(&mut *app.platform().await)
            .await
            .unwrap();
            (rows.len() == 3).then_some(rows)
        })
        .await;
    for (subject, details) in &audited {
        assert!(
            ids.iter().any(|id| subject == &format!("job:{id}")),
            "{subject}"
        );
        assert_eq!(details["claimed_tenant_id"], victim.tenant_id.to_string());
    }
    let metrics = app.text(&format!("http://{}/metrics", worker.health)).await;
    assert!(metrics.contains("leadq_security_events_total{kind=\"bad_signature\"}"));

    // A genuine job still runs.
    let res = app.post_lead(app.key(), &sample_lead("tg-real")).await;
    assert_eq!(res.status(), 202);
    wait_for("the genuine job", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 1).then_some(())
    })
    .await;
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_tenant_b_carrying_tenant_a_user_is_refused() {
    let app = spawn_app().await;
    let b = app.other_tenant().await;
    let worker = app.spawn_worker().await;
    // B has a lead already; A's principal tries to overwrite it through a genuine (signed)
    // message that names B, as a buggy or compromised producer would.
    let res = app
        .post_lead(b.api_key.expose(), &sample_lead("tg-b1"))
        .await;
    assert_eq!(res.status(), 202);
    wait_for("B's own lead", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 1).then_some(())
    })
    .await;
    let before: Value = app
        .get("/v1/leads/tg-b1", b.api_key.expose())
        .await
        .json()
        .await
        .unwrap();

    let mut hostile = sample_lead("tg-b1");
    hostile["name"] = "Mallory".into();
    hostile["answers"] = serde_json::json!({});
    let mut env = envelope_for(b.tenant_id, "tg-b1");
    env.user_id = format!("api_key:{}", app.tenant.key_id);
    env.payload = hostile;
    app.queue
        .enqueue(vec![leadq_queue::NewJob {
            envelope: env,
            run_at: None,
            priority: Default::default(),
        }])
        .await
        .unwrap();
    let dead = wait_for("the refusal", Duration::from_secs(20), || async {
        let d = app.queue.dead_letters("lead_score", 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].attempts),
        ("unauthorized", 1)
    );

    let after: Value = app
        .get("/v1/leads/tg-b1", b.api_key.expose())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before, after, "B's data is unchanged");
    let audited: i64 = wait_for("the audit row", Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from audit_log where tenant_id = $1
                and action = 'job.dead_letter' and outcome = 'unauthorized'",
        )
        .bind(b.tenant_id)
        .fetch_one(&mut *app.scoped(b.tenant_id).await)
        .await
        .unwrap();
        (n == 1).then_some(n)
    })
    .await;
    assert_eq!(audited, 1);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_shows_a_query_without_tenant_filter_only_its_tenant_rows() {
    let app = spawn_app().await;
    let b = app.other_tenant().await;
    let worker = app.spawn_worker().await;
    for (key, id) in [
        (app.key(), "tg-a1"),
        (app.key(), "tg-a2"),
        (b.api_key.expose(), "tg-b1"),
    ] {
        assert_eq!(app.post_lead(key, &sample_lead(id)).await.status(), 202);
    }
    wait_for("three leads", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 3).then_some(())
    })
    .await;
    worker.stop().await;

    // The same raw query, with no tenant filter, in each tenant's scope.
    assert_eq!(
        lead_ids(&app, app.tenant.tenant_id).await,
        vec!["tg-a1", "tg-a2"]
    );
    assert_eq!(lead_ids(&app, b.tenant_id).await, vec!["tg-b1"]);

    // Outside any scope nothing is visible, even to the table's owner.
    let unscoped: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(unscoped, 0);

    // A write for another tenant is refused in A's scope, and B is unchanged.
    let mut tx = app.own().await;
    let err = sqlx::query("update leads set name = 'Mallory' where tenant_id = $1")
        .bind(b.tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(err.rows_affected(), 0, "B's rows are invisible to A");
    let insert =
        sqlx::query("insert into leads (tenant_id, external_id, source) values ($1, 'x', 'y')")
            .bind(b.tenant_id)
            .execute(&mut *tx)
            .await;
    assert!(
        insert.is_err(),
        "an insert for B in A's scope violates the policy"
    );
    drop(tx);
    assert_eq!(lead_ids(&app, b.tenant_id).await, vec!["tg-b1"]);

    // The runtime role is neither superuser nor BYPASSRLS (leadq refuses to start otherwise).
    leadq_platform::db::check_runtime_role(&app.db.pool)
        .await
        .unwrap();
    app.stop().await;
}

/// `select external_id from leads` (no tenant filter) in `tenant`'s scope.
async fn lead_ids(app: &TestApp, tenant: uuid::Uuid) -> Vec<String> {
    let mut tx = app.scoped(tenant).await;
    sqlx::query_scalar("select external_id from leads order by 1")
        .fetch_all(&mut *tx)
        .await
        .unwrap()
}
