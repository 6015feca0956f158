//! Recurring platform tasks: fired once per occurrence across several workers, carried on by
//! the next leader when the leader stops, and doing their work (job_runs retention and
//! reconciliation).

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use leadq_queue::NewJob;
use leadq_testkit::{lead_job, sample_lead, spawn_app_with, wait_for, TestApp};
use uuid::Uuid;

async fn job_run(app: &leadq_testkit::TestApp, days_ago: i32) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let mut tx = app.own().await;
    sqlx::query(
        "insert into job_runs (job_id, tenant_id, kind, message_id, correlation_id, status,
             attempts, enqueued_at, first_started_at, last_started_at, finished_at)
         values ($1, $2, 'lead_score', $3, 'c', 'completed', 1, $4, $4, $4, $4)",
    )
    .bind(id)
    .bind(app.tenant.tenant_id)
    .bind(format!("m-{id}"))
    .bind(chrono::Utc::now() - chrono::TimeDelta::days(days_ago.into()))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn job_run_exists(app: &leadq_testkit::TestApp, id: uuid::Uuid) -> bool {
    sqlx::query_scalar::<_, i64>("select count(*) from job_runs where job_id = $1")
        .bind(id)
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap()
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_occurrence_across_three_workers_and_survives_its_leader() {
    // Every second, so the test sees many occurrences.
    let app = spawn_app_with(&[
        ("LEADQ_SCHEDULE_JOB_RUNS_RETENTION", "* * * * * *"),
        ("LEADQ_SCHEDULE_CRM_RECONCILE", "off"),
        ("LEADQ_JOB_RUNS_KEEP_DAYS", "30"),
    ])
    .await;
    let old = job_run(&app, 40).await;
    let recent = job_run(&app, 2).await;
    let mut workers = vec![
        app.spawn_worker().await,
        app.spawn_worker().await,
        app.spawn_worker().await,
    ];
    let firings = || async {
        let mut f = app.queue.firings(200).await.unwrap();
        f.retain(|f| f.name == "job_runs_retention");
        f.reverse(); // oldest first
        f
    };
    let before = wait_for("four firings", Duration::from_secs(15), || async {
        let f = firings().await;
        (f.len() >= 4).then_some(f)
    })
    .await;
    // The task did its work: the 40-day-old row is gone, the 2-day-old one kept.
    assert!(!job_run_exists(&app, old).await, "old job_runs row kept");
    assert!(
        job_run_exists(&app, recent).await,
        "recent job_runs row deleted"
    );

    // The leader stops; another worker takes over and carries on.
    let leader = before.last().unwrap().worker.clone();
    let i = workers
        .iter()
        .position(|w| w.id == leader)
        .expect("leader is one of ours");
    workers.remove(i).stop().await;
    let n = before.len();
    let after = wait_for(
        "firings by a new leader",
        Duration::from_secs(15),
        || async {
            let f = firings().await;
            (f.len() >= n + 3 && f.last().is_some_and(|l| l.worker != leader)).then_some(f)
        },
    )
    .await;
    for w in workers {
        w.stop().await;
    }
    // Once per occurrence: whole seconds, strictly increasing, none twice, whoever led.
    let times: Vec<i64> = after.iter().map(|f| f.at_ms).collect();
    assert!(times.iter().all(|t| t % 1000 == 0), "{times:?}");
    assert!(
        times.windows(2).all(|w| w[1] > w[0]),
        "a firing twice or out of order: {times:?}"
    );
    let leaders: std::collections::BTreeSet<&str> =
        after.iter().map(|f| f.worker.as_str()).collect();
    assert!(leaders.len() >= 2, "one leader only: {leaders:?}");
    println!(
        "schedule: {} firings over {} s by {} leaders, none twice",
        times.len(),
        (times[times.len() - 1] - times[0]) / 1000 + 1,
        leaders.len()
    );
    app.stop().await;
}

/// A `job_runs` row left `running` / `retrying` an hour ago (its end never recorded).
async fn stale_run(app: &TestApp, id: Uuid, status: &str) {
    let mut tx = app.own().await;
    sqlx::query(
        "insert into job_runs (job_id, tenant_id, kind, message_id, correlation_id, status,
             attempts, enqueued_at, first_started_at, last_started_at, updated_at)
         values ($1, $2, 'lead_score', $3, 'c-stale', $4, 1, $5, $5, $5, $5)
         on conflict (job_id) do update
            set status = excluded.status, finished_at = null, updated_at = excluded.updated_at",
    )
    .bind(id)
    .bind(app.tenant.tenant_id)
    .bind(format!("m-{id}"))
    .bind(status)
    .bind(Utc::now() - TimeDelta::hours(1))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn run_state(app: &TestApp, id: Uuid) -> (String, bool) {
    sqlx::query_as("select status, finished_at is not null from job_runs where job_id = $1")
        .bind(id)
        .fetch_optional(&mut *app.own().await)
        .await
        .unwrap()
        .unwrap_or_default()
}

fn job(app: &TestApp, name: &str, payload: serde_json::Value) -> NewJob {
    lead_job(
        app.tenant.tenant_id,
        &app.key_actor(),
        &format!("m-{name}"),
        &format!("c-{name}"),
        payload,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_whose_end_was_never_recorded_are_set_to_what_the_queue_knows() {
    let app = spawn_app_with(&[
        ("LEADQ_SCHEDULE_JOB_RUNS_RECONCILE", "* * * * * *"),
        ("LEADQ_SCHEDULE_CRM_RECONCILE", "off"),
        ("LEADQ_SCHEDULE_JOB_RUNS_RETENTION", "off"),
    ])
    .await;
    let mut lead = sample_lead("tg-reconcile");
    lead.as_object_mut().unwrap().remove("email");
    let jobs = vec![
        // Completes.
        job(&app, "done", lead),
        // Dead-lettered at once: not a lead.
        job(&app, "dead", serde_json::json!({"not": "a lead"})),
        // Waits an hour: still queued.
        NewJob {
            run_at: Some(Utc::now() + TimeDelta::hours(1)),
            ..job(&app, "later", sample_lead("tg-later"))
        },
    ];
    let ids: Vec<Uuid> = app
        .queue
        .enqueue(jobs)
        .await
        .unwrap()
        .iter()
        .map(|e| e.job_id)
        .collect();
    let (done, dead, later, lost) = (ids[0], ids[1], ids[2], Uuid::now_v7());
    let worker = app.spawn_worker().await;
    wait_for(
        "one job done, one dead",
        Duration::from_secs(20),
        || async {
            let c = app.queue.counts("lead_score").await.unwrap();
            (c.done == 1 && c.dead == 1).then_some(())
        },
    )
    .await;
    // The worker's own records are written after the acknowledgement: let them land, and stop
    // it, so none races the stale rows below. A second worker's scheduler reconciles.
    wait_for(
        "the completed run recorded",
        Duration::from_secs(10),
        || async { (run_state(&app, done).await == ("completed".into(), true)).then_some(()) },
    )
    .await;
    worker.stop().await;
    // As if each run's last write had been lost an hour ago.
    stale_run(&app, done, "running").await;
    stale_run(&app, dead, "running").await;
    stale_run(&app, later, "retrying").await;
    stale_run(&app, lost, "running").await;
    // The dead run's row knows neither its attempts nor its error yet.
    let mut tx = app.own().await;
    sqlx::query("update job_runs set attempts = 0, last_error_code = null where job_id = $1")
        .bind(dead)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let worker = app.spawn_worker().await;

    wait_for("the rows reconciled", Duration::from_secs(15), || async {
        let states = (
            run_state(&app, done).await,
            run_state(&app, dead).await,
            run_state(&app, lost).await,
        );
        (states.0 .0 != "running" && states.1 .0 != "running" && states.2 .0 != "running")
            .then_some(())
    })
    .await;
    worker.stop().await;
    assert_eq!(run_state(&app, done).await, ("completed".into(), true));
    assert_eq!(run_state(&app, dead).await, ("dead".into(), true));
    assert_eq!(run_state(&app, lost).await, ("unknown".into(), false));
    // A job still queued keeps its row as it was.
    assert_eq!(run_state(&app, later).await, ("retrying".into(), false));
    // With what the dead-letter set recorded: the attempts made and the last error code.
    let (attempts, code): (i32, Option<String>) =
        sqlx::query_as("select attempts, last_error_code from job_runs where job_id = $1")
            .bind(dead)
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
    assert_eq!((attempts, code.as_deref()), (1, Some("malformed_payload")));
    // The dead letter the worker could not record is audited now.
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log
          where action = 'job.dead_letter' and subject = $1 and actor = 'system:scheduler'",
    )
    .bind(format!("job:{dead}"))
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    app.stop().await;
}
