//! Dead-letter operations: paged, filtered, scrubbed listing; re-drive keeping the message id;
//! purge by filter; operator-only and audited, through the API and `leadq dlq`.

use std::time::Duration;

use leadq_platform::tenant;
use leadq_testkit::{lead_job, sample_lead, spawn_app, wait_for, TestApp};
use serde_json::{json, Value};

/// Enqueues a lead_score job for `tenant` caused by `user_id`, with a secret-looking field.
async fn enqueue(app: &TestApp, tenant: uuid::Uuid, user_id: &str, n: usize) {
    let jobs = (0..n)
        .map(|i| {
            let mut lead = sample_lead(&format!("tg-{tenant}-{i}"));
            lead.as_object_mut().unwrap().remove("email");
            lead["answers"]["password"] = json!("hunter2-very-secret");
            lead_job(
                tenant,
                user_id,
                &format!("m-{tenant}-{i}-{user_id}"),
                &format!("c-{i}"),
                lead,
            )
        })
        .collect();
    app.queue.enqueue(jobs).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_redriven_and_purged_by_operators_only() {
    let app = spawn_app().await;
    let b = app.other_tenant().await;
    let me = app.key_actor();
    // Tenant A has lead_score disabled: its jobs die as `unauthorized` until it is enabled.
    tenant::set_kind_mode(
        &app.db.pool,
        "operator:test",
        &app.tenant.slug,
        "lead_score",
        "disabled",
    )
    .await
    .unwrap();
    enqueue(&app, app.tenant.tenant_id, &me, 3).await;
    // Tenant B's jobs name a principal that is not B's: dead for good.
    enqueue(&app, b.tenant_id, &me, 2).await;
    let worker = app.spawn_worker().await;
    wait_for("five dead letters", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().dead == 5).then_some(())
    })
    .await;
    let op = app.operator_token().to_owned();

    // Tenant keys may not look.
    let res = app.get("/v1/dlq/lead_score", app.key()).await;
    assert_eq!(res.status(), 403);

    // Paged and filtered by tenant; payloads scrubbed; no signature shown.
    let page: Value = app
        .get(
            &format!("/v1/dlq/lead_score?tenant={}&limit=2", app.tenant.slug),
            &op,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest: Value = app
        .get(
            &format!(
                "/v1/dlq/lead_score?tenant={}&limit=2&cursor={cursor}",
                app.tenant.slug
            ),
            &op,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    let text = format!("{page}{rest}");
    assert!(
        !text.contains("hunter2-very-secret"),
        "payload scrubbed: {text}"
    );
    assert!(!text.contains("hmac"));
    let first = &page["items"][0];
    assert_eq!(first["reason"], "unauthorized");
    let job_id = first["job_id"].as_str().unwrap().to_owned();
    let message_id = first["envelope"]["message_id"].as_str().unwrap().to_owned();
    let shown: Value = app
        .get(&format!("/v1/dlq/lead_score/{job_id}"), &op)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["job_id"], job_id.as_str());

    // Fix the cause, re-drive A's by filter: they run, under their own message ids.
    tenant::set_kind_mode(
        &app.db.pool,
        "operator:test",
        &app.tenant.slug,
        "lead_score",
        "enabled",
    )
    .await
    .unwrap();
    // The worker learns of the change by a NOTIFY, and at the latest when its cached answer
    // expires: past that bound the re-driven jobs cannot meet the old answer. (On a loaded
    // machine the NOTIFY came after the re-drive's first fetch, the jobs died again as
    // `unauthorized`, and the wait below timed out.)
    tokio::time::sleep(leadq_jobs::authz::cache::TTL + Duration::from_millis(200)).await;
    let out: Value = app
        .post_json(
            "/v1/dlq/lead_score/redrive",
            &op,
            &json!({"tenant": app.tenant.slug, "reason": "unauthorized"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (out["selected"].as_u64(), out["done"].as_u64()),
        (Some(3), Some(3))
    );
    wait_for(
        "the re-driven jobs completed",
        Duration::from_secs(20),
        || async { (app.queue.counts("lead_score").await.unwrap().done == 3).then_some(()) },
    )
    .await;
    // The re-driven run's outcome, once it has replaced the dead letter's row.
    let runs = app
        .settled_runs("job_id = $1::uuid", &job_id, |runs| {
            runs.iter().all(|(_, s)| s != "dead" && s != "running")
        })
        .await;
    assert_eq!(runs, vec![(message_id, "completed".to_owned())]);

    // A purge needs a filter (or --all); B's go by tenant, through the CLI.
    let out = crate::leadq_cmd(&app)
        .args(["dlq", "purge", "lead_score"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::leadq_cmd(&app)
        .args([
            "dlq",
            "purge",
            "lead_score",
            "--tenant",
            &b.slug,
            "--operator",
            "ann",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["done"], 2);
    assert_eq!(app.queue.counts("lead_score").await.unwrap().dead, 0);

    // Every operation is audited with its operator.
    let audited: Vec<(String, String)> =
        sqlx::query_as("select action, actor from audit_log where action like 'dlq.%' order by id")
            .fetch_all(&mut *app.platform().await)
            .await
            .unwrap();
    let actions: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "dlq.list",
            "dlq.list",
            "dlq.show",
            "dlq.redrive",
            "dlq.purge"
        ]
    );
    assert_eq!(audited[4].1, "operator:ann");

    worker.stop().await;
    app.stop().await;
}

/// A mass failure buries hundreds of jobs in one millisecond (the reaper poisons up to 1,000 a
/// call, an ack batch buries up to 256): every one is listed, and a bulk re-drive takes them
/// all. Past the first page, a window of 201 letters from the cursor's millisecond held only
/// letters already returned, and the listing ended there: the rest were neither listed nor
/// re-driven, and retention deleted them later. A letter whose envelope names no tenant as a
/// string (`null`: a forged job's) goes back with the others, not half-way through a chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_millisecond_of_many_dead_letters_is_listed_and_redriven_whole() {
    let app = spawn_app().await;
    let prefix = app.settings.queue.prefix.clone();
    let key = |name: &str| format!("{{{prefix}:lead_score}}:{name}");
    let at = chrono::Utc::now().timestamp_millis();
    let ids: Vec<uuid::Uuid> = (0..450).map(|_| uuid::Uuid::new_v4()).collect();
    let mut pipe = redis::pipe();
    for (i, id) in ids.iter().enumerate() {
        let tenant = if i == 7 {
            Value::Null
        } else {
            json!(app.tenant.tenant_id)
        };
        let envelope = json!({"tenant_id": tenant, "action": "lead_score", "message_id": id});
        pipe.zadd(key("dead"), id.to_string(), at).hset_multiple(
            key("dead_data"),
            &[
                (id.to_string(), envelope.to_string()),
                (format!("{id}:r"), "poisoned".to_owned()),
                (format!("{id}:c"), "lease_expired".to_owned()),
                (format!("{id}:a"), "3".to_owned()),
            ],
        );
    }
    let _: () = pipe
        .query_async(&mut crate::redis_conn().await)
        .await
        .unwrap();
    let filter = leadq_queue::dlq::Filter::default();
    let listed = app
        .queue
        .dead_letter_ids("lead_score", &filter)
        .await
        .unwrap();
    assert_eq!(listed.len(), 450, "listed");
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 450, "listed twice");
    let n = app
        .queue
        .redrive("lead_score", &listed, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(n, 450);
    let counts = app.queue.counts("lead_score").await.unwrap();
    assert_eq!((counts.pending, counts.dead), (450, 0), "{counts:?}");
    app.stop().await;
}

/// A tenant's overview looks for its dead letters among the newest 1,000 of the kind only
/// (dead letters are one set per kind for every tenant: looking further read every other
/// tenant's letters on each view); the operators' listing still finds the older ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_overview_looks_for_its_dead_letters_among_the_newest_only() {
    let app = spawn_app().await;
    let other = uuid::Uuid::new_v4();
    let prefix = app.settings.queue.prefix.clone();
    let key = |name: &str| format!("{{{prefix}:lead_score}}:{name}");
    let now = chrono::Utc::now().timestamp_millis();
    let mut pipe = redis::pipe();
    // The tenant's one letter, an hour old; then 1,200 of another tenant's, newer.
    for i in 0..1201_i64 {
        let (tenant, at) = if i == 0 {
            (app.tenant.tenant_id, now - 3_600_000)
        } else {
            (other, now - 1_200 + i)
        };
        let id = uuid::Uuid::new_v4().to_string();
        let envelope = serde_json::to_string(
            &leadq_testkit::lead_job(
                tenant,
                "api_key:x",
                &format!("m-{i}"),
                "c",
                sample_lead("x"),
            )
            .envelope,
        )
        .unwrap();
        pipe.zadd(key("dead"), &id, at).hset_multiple(
            key("dead_data"),
            &[
                (id.clone(), envelope),
                (format!("{id}:r"), "max_attempts".to_owned()),
            ],
        );
    }
    let _: () = pipe
        .query_async(&mut crate::redis_conn().await)
        .await
        .unwrap();
    let filter = leadq_queue::dlq::Filter {
        tenant: Some(app.tenant.tenant_id),
        ..Default::default()
    };
    let newest = app
        .queue
        .newest_dead_letters("lead_score", &filter, 20, 1000)
        .await
        .unwrap();
    assert!(newest.is_empty(), "{newest:?}");
    let all = app
        .queue
        .dead_letter_page("lead_score", &filter, None, 20)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1);
    assert_eq!(all.items[0].envelope.as_ref().unwrap().message_id, "m-0");
    app.stop().await;
}

/// A bulk action that stops on a Redis failure is audited as `failed`, naming who and how far
/// it got: the chunks it finished were moved for good. (It was audited only on success, so a
/// re-drive that failed halfway had moved its first chunks unaudited.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_action_that_stops_on_an_error_is_audited_as_failed() {
    use leadq_jobs::ops::deadletters::{act, Action, Actor, Selection};
    let app = spawn_app().await;
    let queue = crate::chaos::queue_without_redis(&app).await;
    let who = Actor {
        actor: "operator:ops",
        correlation_id: "c-failed-redrive",
    };
    let ids = Selection::Ids {
        ids: vec![uuid::Uuid::now_v7(), uuid::Uuid::now_v7()],
        within: Default::default(),
    };
    let result = act(
        &app.db.pool,
        &queue,
        who,
        "lead_score",
        Action::Redrive,
        &ids,
        &mut |_, _| {},
    )
    .await;
    assert!(result.is_err(), "Redis is gone");
    let mut tx = leadq_platform::db::begin(&app.db.pool, leadq_platform::db::Scope::Platform)
        .await
        .unwrap();
    let (actor, outcome, details): (String, String, Value) = sqlx::query_as(
        "select actor, outcome, details from audit_log
          where action = 'dlq.redrive' and correlation_id = 'c-failed-redrive'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("the failed re-drive is audited");
    assert_eq!(
        (actor.as_str(), outcome.as_str()),
        ("operator:ops", "failed")
    );
    assert_eq!(details["selected"], 2, "{details}");
    assert_eq!(details["processed"], 0, "{details}");
    app.stop().await;
}

/// Ids with a filter are the ids the filter also selects: `--id <B's letter> --tenant A` leaves
/// B's letter alone (the filter was ignored, and B's letter was purged); the audit entry names
/// the ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_dead_letters_are_narrowed_by_the_filter_and_audited_by_id() {
    let app = spawn_app().await;
    let b = app.other_tenant().await;
    let me = app.key_actor();
    // B's job names a principal that is not B's: dead for good.
    enqueue(&app, b.tenant_id, &me, 1).await;
    let worker = app.spawn_worker().await;
    wait_for("a dead letter", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().dead == 1).then_some(())
    })
    .await;
    worker.stop().await;
    let page: Value = app
        .get("/v1/dlq/lead_score", app.operator_token())
        .await
        .json()
        .await
        .unwrap();
    let id = page["items"][0]["job_id"].as_str().unwrap().to_owned();
    let purge = |tenant: &str| {
        let out = crate::leadq_cmd(&app)
            .args([
                "dlq",
                "purge",
                "lead_score",
                "--id",
                &id,
                "--tenant",
                tenant,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let o = purge(&app.tenant.slug);
    assert_eq!(
        (o["selected"].as_u64(), o["done"].as_u64()),
        (Some(0), Some(0)),
        "{o}"
    );
    assert_eq!(
        app.queue.counts("lead_score").await.unwrap().dead,
        1,
        "B's letter stays"
    );
    let o = purge(&b.slug);
    assert_eq!(
        (o["selected"].as_u64(), o["done"].as_u64()),
        (Some(1), Some(1)),
        "{o}"
    );
    let details: Vec<Value> =
        sqlx::query_scalar("select details from audit_log where action = 'dlq.purge' order by id")
            .fetch_all(&mut *app.platform().await)
            .await
            .unwrap();
    assert_eq!(details.len(), 2);
    for d in &details {
        assert_eq!(d["selection"]["job_ids"], json!([id]), "{d}");
    }
    assert_eq!(details[0]["selection"]["selected_ids"], json!([]));
    assert_eq!(details[1]["selection"]["selected_ids"], json!([id]));
    assert_eq!(
        details[0]["selection"]["within"]["tenant"],
        json!(app.tenant.tenant_id),
        "{}",
        details[0]
    );
    app.stop().await;
}

/// Bad input to `leadq dlq` exits 2 (`invalid_request`) whichever layer refuses it: a cursor
/// the engine cannot read, an age that is not a duration. (Both exited 1, "queue error" or the
/// parser's message, like a failure worth retrying.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_the_dlq_commands_exits_2() {
    let app = spawn_app().await;
    for args in [
        &["dlq", "list", "lead_score", "--cursor", "garbage"][..],
        &["dlq", "list", "lead_score", "--older-than", "1é"][..],
        &["dlq", "purge", "lead_score", "--older-than", "99999999d"][..],
    ] {
        let out = crate::leadq_cmd(&app).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid_request"), "{args:?}: {err}");
    }
    app.stop().await;
}
