//! Right to be forgotten: PostgreSQL and pending jobs.

use std::time::Duration;

use leadq_testkit::{sample_lead, spawn_app, wait_for, TestApp};
use serde_json::Value;

/// Every envelope still stored in the lead_score queue (pending, scheduled or dead).
async fn stored_envelopes(app: &TestApp) -> Vec<String> {
    let mut conn = crate::redis_conn().await;
    let tag = format!("{{{}:lead_score}}", app.settings.queue.prefix);
    let mut out = Vec::new();
    for hash in ["jobs", "dead_data"] {
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(format!("{tag}:{hash}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        out.extend(
            all.into_iter()
                .filter(|(k, _)| !k.contains(':'))
                .map(|(_, v)| v),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_removes_the_lead_from_postgres_and_from_pending_jobs() {
    let app = spawn_app().await;
    let b = app.other_tenant().await;
    let worker = app.spawn_worker().await;
    assert_eq!(
        app.post_lead(app.key(), &sample_lead("tg-1"))
            .await
            .status(),
        202
    );
    wait_for("the lead scored", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 1).then_some(())
    })
    .await;
    worker.stop().await;

    // Pending work, with no worker running: two updates of tg-1, another lead of A, and
    // B's own lead that happens to use the same external id.
    for _ in 0..2 {
        assert_eq!(
            app.post_lead(app.key(), &sample_lead("tg-1"))
                .await
                .status(),
            202
        );
    }
    assert_eq!(
        app.post_lead(app.key(), &sample_lead("tg-2"))
            .await
            .status(),
        202
    );
    assert_eq!(
        app.post_lead(b.api_key.expose(), &sample_lead("tg-1"))
            .await
            .status(),
        202
    );

    // B cannot erase A's lead: 404, and A's job is still there.
    let res = app
        .client
        .delete(format!("{}/v1/leads/tg-2", app.address))
        .bearer_auth(b.api_key.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(app.queue.counts("lead_score").await.unwrap().pending, 4);

    let res = app
        .client
        .delete(format!("{}/v1/leads/tg-1", app.address))
        .bearer_auth(app.key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let erased: Value = res.json().await.unwrap();
    assert_eq!(
        erased,
        serde_json::json!({"lead_deleted": true, "jobs_removed": 2, "jobs_running": 0,
            "crm": {"status": "not_synced", "job_id": null}})
    );
    assert_eq!(app.get("/v1/leads/tg-1", app.key()).await.status(), 404);
    let left = stored_envelopes(&app).await;
    assert_eq!(left.len(), 2, "A's tg-2 and B's tg-1 remain");
    for env in &left {
        let e: Value = serde_json::from_str(env).unwrap();
        let is_a_tg1 = e["tenant_id"] == app.tenant.tenant_id.to_string()
            && e["payload"]["external_id"] == "tg-1";
        assert!(!is_a_tg1, "an erased lead's data is gone from Redis");
    }

    // Running the rest does not resurrect it; B's lead with the same id is untouched.
    let worker = app.spawn_worker().await;
    wait_for("the remaining jobs", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 3).then_some(())
    })
    .await;
    worker.stop().await;
    assert_eq!(app.get("/v1/leads/tg-1", app.key()).await.status(), 404);
    assert_eq!(
        app.get("/v1/leads/tg-1", b.api_key.expose()).await.status(),
        200
    );

    // The operator CLI erases too; the audit keeps only pseudonymous records.
    #[allow(clippy::disallowed_methods)]
    let out = crate::leadq_cmd(&app)
        .args(["lead", "erase", &app.tenant.slug, "tg-2"])
        .env(
            "LEADQ_DATA_KEYS",
            app.settings.data_keys().to_spec().expose(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["lead_deleted"], true);
    let trail: Vec<(String, String, Value)> =
        sqlx::query_as("select action, subject, details from audit_log order by id")
            .fetch_all(&mut *app.own().await)
            .await
            .unwrap();
    let text = serde_json::to_string(&trail).unwrap();
    for pii in ["ada@example.com", "Ada Lovelace", "tg-1", "tg-2"] {
        assert!(!text.contains(pii), "{pii} in the audit trail: {text}");
    }
    assert_eq!(
        trail.iter().filter(|(a, _, _)| a == "lead.erase").count(),
        2
    );
    app.stop().await;
}

/// An erasure that lands while a job is creating the same lead (past its tombstone check, not
/// yet committed) waits for that job and deletes what it wrote: the lead never comes back.
/// (Found by schemathesis's stateful phase: create → erase → read answered 200.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_racing_a_job_that_creates_the_lead_leaves_no_lead() {
    let app = spawn_app().await;
    let tenant = app.tenant.tenant_id;
    let meta = leadq_queue::envelope::JobMeta {
        job_id: uuid::Uuid::new_v4(),
        attempt: 1,
        schema_version: 1,
        message_id: "m-race".into(),
        tenant_id: tenant,
        user_id: app.key_actor(),
        action: "lead_score".into(),
        timestamp: chrono::Utc::now(),
        correlation_id: "c-race".into(),
        trace_context: Default::default(),
        shadow: false,
    };
    let mut job = app.own().await;
    let created = leadq_jobs::lead::store::ensure(&mut job, &meta, "tg-race", "telegram")
        .await
        .unwrap();
    assert!(created.is_some(), "the job inserts the lead");
    let erasing = tokio::spawn({
        let (pool, queue, sealer) = (app.db.pool.clone(), app.queue.clone(), app.sealer());
        async move {
            leadq_jobs::lead::erase(&pool, &queue, &sealer, tenant, "tg-race", "operator:t", "c")
                .await
        }
    });
    // Unguarded, the erasure finds no lead (the insert is not committed) and is done by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    job.commit().await.unwrap();
    let erased = erasing.await.unwrap().unwrap();
    assert!(
        erased.lead_deleted,
        "the erasure waited and deleted the job's lead"
    );
    let left: i64 = sqlx::query_scalar("select count(*) from leads where external_id = 'tg-race'")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(left, 0);
    app.stop().await;
}

/// Redis fails while a lead the CRM holds is erased: nothing is committed, and the erasure run
/// again still asks the CRM to delete the contact. (With the CRM's job enqueued after the
/// commit, the first run deleted the lead and lost the job; the second found no lead and no
/// sync, answered `not_synced`, and the contact stayed in the CRM.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_that_meets_a_redis_outage_still_asks_the_crm_when_run_again() {
    let app = spawn_app().await;
    let tenant = app.tenant.tenant_id;
    let mut tx = app.db.owner_tx(tenant).await;
    let lead: uuid::Uuid = sqlx::query_scalar(
        "insert into leads (tenant_id, external_id, source) values ($1, 'tg-outage', 'telegram')
         returning id",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into crm_sync_state (tenant_id, lead_id, wanted_version, synced_version, crm_id)
         values ($1, $2, 1, 1, '90210')",
    )
    .bind(tenant)
    .bind(lead)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into leads (tenant_id, external_id, source) values ($1, 'tg-no-crm', 'telegram')",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let down = crate::chaos::queue_without_redis(&app).await;
    let (pool, sealer) = (app.db.pool.clone(), app.sealer());
    let erase_id = |queue: leadq_queue::Queue, id: &'static str| {
        let (pool, sealer) = (pool.clone(), sealer.clone());
        async move {
            leadq_jobs::lead::erase(&pool, &queue, &sealer, tenant, id, "operator:t", "c").await
        }
    };
    let erase = |queue: leadq_queue::Queue| erase_id(queue, "tg-outage");
    assert!(matches!(
        erase(down.clone()).await,
        Err(leadq_jobs::lead::EraseError::Queue(_))
    ));
    // A lead the CRM never had: its deletion commits before Redis is first needed (to take
    // its queued jobs away), and is audited in that same transaction. (Audited after the
    // queue's cleanup, the failure left a deleted lead and no entry; a second run found no
    // lead and audited `lead:unknown`.)
    assert!(matches!(
        erase_id(down, "tg-no-crm").await,
        Err(leadq_jobs::lead::EraseError::Queue(_))
    ));
    let audited: Vec<serde_json::Value> = sqlx::query_scalar(
        "select details from audit_log where action = 'lead.erase' and subject <> 'lead:unknown'",
    )
    .fetch_all(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["lead_deleted"], true, "{audited:?}");
    let left: i64 =
        sqlx::query_scalar("select count(*) from leads where external_id = 'tg-outage'")
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
    assert_eq!(
        left, 1,
        "the lead was deleted although the CRM was not asked"
    );
    let erased = erase(app.queue.clone()).await.unwrap();
    assert!(erased.lead_deleted);
    assert_eq!(erased.crm.status, "requested", "{erased:?}");
    app.stop().await;
}

/// Erasures are limited per tenant (each reads every tenant's queued jobs, found or not): over
/// `LEADQ_ERASURES_PER_SEC` with its burst, 429 `rate_limited` with `Retry-After`, for
/// `DELETE /v1/leads/{id}` and `POST /v1/erasures` together; another tenant's erasures are not
/// counted against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasures_over_the_tenants_rate_are_refused_with_a_wait() {
    let app = leadq_testkit::spawn_app_with(&[
        ("LEADQ_ERASURES_PER_SEC", "1"),
        ("LEADQ_ERASURES_BURST", "2"),
    ])
    .await;
    let delete = |key: String, id: &'static str| {
        app.client
            .delete(format!("{}/v1/leads/{id}", app.address))
            .bearer_auth(key)
            .send()
    };
    let key = app.key().to_owned();
    assert_eq!(
        delete(key.clone(), "tg-none-1").await.unwrap().status(),
        404
    );
    assert_eq!(
        delete(key.clone(), "tg-none-2").await.unwrap().status(),
        404
    );
    let res = delete(key.clone(), "tg-none-3").await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let res = app
        .client
        .post(format!("{}/v1/erasures", app.address))
        .bearer_auth(&key)
        .json(&serde_json::json!({"email": "nobody@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let other = app.other_tenant().await;
    assert_eq!(
        delete(other.api_key.expose().to_owned(), "tg-none-1")
            .await
            .unwrap()
            .status(),
        404
    );
    app.stop().await;
}
