//! The JSON endpoints the console renders (and tools and the CLI can call): every tenant's
//! standing per kind and its controls, finding a job by id or message id with its runs, the
//! operators' audit trail with the chain's verification, and a tenant's own overview. Each is
//! operator-only (or the tenant's own), permission-checked and audited.

use std::time::Duration;

use leadq_testkit::{sample_lead, spawn_app, wait_for, TestApp};
use serde_json::{json, Value};

/// `GET path` with `token`, as JSON.
async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    app.get(path, token).await.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_read_and_control_tenant_queues_and_find_jobs_through_the_api() {
    let app = spawn_app().await;
    let op = app.operator_token().to_owned();
    let slug = app.tenant.slug.clone();

    // Pause the tenant's lead_score, post two leads: they are held.
    let res = app
        .post_json(
            &format!("/v1/queues/lead_score/tenants/{slug}"),
            &op,
            &json!({"action": "pause"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let applied: Value = res.json().await.unwrap();
    assert_eq!(applied["state"]["paused"], true);
    let mut posted = Vec::new();
    for i in 0..2 {
        let mut lead = sample_lead(&format!("held-{i}"));
        lead["message_id"] = json!(format!("held-msg-{i}"));
        let res = app.post_lead(app.key(), &lead).await;
        assert_eq!(res.status(), 202);
        posted.push(res.json::<Value>().await.unwrap());
    }
    let _worker = app.spawn_worker().await;
    // Held once a worker met them (a paused tenant's jobs are set aside as they come up).
    let row = wait_for(
        "the paused tenant's jobs held",
        Duration::from_secs(20),
        || async {
            let page: Value = app
                .get(&format!("/v1/queues/tenants?tenant={slug}"), &op)
                .await
                .json()
                .await
                .ok()?;
            let row = page["rows"]
                .as_array()?
                .iter()
                .find(|r| r["kind"] == "lead_score")?
                .clone();
            (row["held"] == 2).then_some(row)
        },
    )
    .await;
    assert_eq!(row["backlog"], 2, "held jobs are still backlog");
    assert_eq!(row["paused"], true);

    // Found by message id: held, in the tenant named.
    let found: Value = get_json(
        &app,
        &format!("/v1/jobs?message_id=held-msg-0&tenant={slug}"),
        &op,
    )
    .await;
    assert_eq!(found["job_id"], posted[0]["job_id"]);
    assert_eq!(found["location"]["state"], "held");
    assert_eq!(found["tenant"], slug.as_str());
    // Another tenant's message ids are not this one's.
    let other = app.other_tenant().await;
    let res = app
        .get(
            &format!("/v1/jobs?message_id=held-msg-0&tenant={}", other.slug),
            &op,
        )
        .await;
    assert_eq!(res.status(), 404);

    // Resume: both run; found by job id, done, with their run recorded.
    let res = app
        .post_json(
            &format!("/v1/queues/lead_score/tenants/{slug}"),
            &op,
            &json!({"action": "resume"}),
        )
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["resumed"], 2);
    let id = posted[1]["job_id"].as_str().unwrap().to_owned();
    let done = wait_for(
        "the job done and its run recorded",
        Duration::from_secs(20),
        || async {
            let v: Value = app
                .get(&format!("/v1/jobs/{id}?tenant={slug}"), &op)
                .await
                .json()
                .await
                .ok()?;
            (v["location"]["state"] == "done" && v["runs"][0]["status"] == "completed").then_some(v)
        },
    )
    .await;
    assert_eq!(done["kind"], "lead_score");

    // Bad input is a 4xx in the standard body; tenant keys may not look.
    for (path, status) in [
        ("/v1/jobs?message_id=x", 400),
        ("/v1/jobs?message_id=x&tenant=NOT_A_SLUG", 400),
        ("/v1/jobs/00000000-0000-0000-0000-000000000000", 404),
        ("/v1/queues/tenants?tenant=no-such-tenant", 404),
    ] {
        let res = app.get(path, &op).await;
        assert_eq!(res.status().as_u16(), status, "{path}");
        let body: Value = res.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    let res = app
        .post_json(
            &format!("/v1/queues/lead_score/tenants/{slug}"),
            &op,
            &json!({"action": "cap", "value": 0}),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(app.get("/v1/queues/tenants", app.key()).await.status(), 403);
    assert_eq!(
        app.get(&format!("/v1/jobs/{id}"), app.key()).await.status(),
        403
    );

    // The trail shows the operator's changes and lookups; a tenant's trail read is audited.
    let trail: Value = get_json(
        &app,
        "/v1/audit/trail?actor=operator:oncall&action=queue.tenant.pause",
        &op,
    )
    .await;
    assert_eq!(trail["entries"].as_array().unwrap().len(), 1);
    let views: Value = get_json(&app, "/v1/audit/trail?action=job.view", &op).await;
    assert!(views["entries"].as_array().unwrap().len() >= 3);
    let tenant_trail: Value = get_json(
        &app,
        &format!("/v1/audit/trail?tenant={slug}&action=lead.score"),
        &op,
    )
    .await;
    assert_eq!(tenant_trail["entries"].as_array().unwrap().len(), 2);
    let read: Value = get_json(&app, "/v1/audit/trail?action=audit.view", &op).await;
    assert_eq!(read["entries"].as_array().unwrap().len(), 1);

    // The tenant's own overview: its queues and recent runs, never another tenant's.
    let own = get_json(&app, "/v1/tenant/overview", app.key()).await;
    assert_eq!(own["tenant"], slug.as_str());
    assert_eq!(own["runs"].as_array().unwrap().len(), 2);
    let theirs = get_json(&app, "/v1/tenant/overview", other.api_key.expose()).await;
    assert_eq!(theirs["runs"].as_array().unwrap().len(), 0);
}

/// A queue control Redis does not apply is audited as `failed`, and no entry says it was
/// made: the entry was committed before Redis was asked, so a pause that never happened read
/// as done in the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_control_redis_refuses_is_audited_as_failed_not_as_done() {
    use leadq_jobs::ops::deadletters::Actor;
    use leadq_jobs::ops::tenant_queue::{apply, Control};
    let app = spawn_app().await;
    let queue = crate::chaos::queue_without_redis(&app).await;
    let who = Actor {
        actor: "operator:ops",
        correlation_id: "c-failed-pause",
    };
    let result = apply(
        &app.db.pool,
        &queue,
        who,
        &app.tenant.slug,
        "lead_score",
        Control::Pause,
    )
    .await;
    assert!(result.is_err(), "Redis is gone");
    let mut tx = leadq_platform::db::begin(&app.db.pool, leadq_platform::db::Scope::Platform)
        .await
        .unwrap();
    let entries: Vec<(String, Value)> = sqlx::query_as(
        "select outcome, details from audit_log
          where action = 'queue.tenant.pause' and correlation_id = 'c-failed-pause'",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, "failed");
    assert_eq!(
        entries[0].1["error"], "queue_unavailable",
        "{:?}",
        entries[0].1
    );
    app.stop().await;
}
