//! Status API, health endpoints and metrics.

use std::time::Duration;

use chrono::{DateTime, Utc};
use leadq_testkit::{sample_lead, spawn_app, wait_for};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_live_worker_heartbeat_and_the_queue_counts() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    for i in 0..3 {
        let res = app
            .post_lead(app.key(), &sample_lead(&format!("tg-{i}")))
            .await;
        assert_eq!(res.status(), 202);
    }
    let status: Value = wait_for(
        "three completions in the status",
        Duration::from_secs(20),
        || async {
            let s: Value = app
                .get("/v1/status", app.operator_token())
                .await
                .json()
                .await
                .unwrap();
            (s["queues"][0]["done"] == 3).then_some(s)
        },
    )
    .await;
    // A cross-tenant view: tenant keys are refused.
    let res = app.get("/v1/status", app.key()).await;
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "operator_only");
    let q = &status["queues"][0];
    assert_eq!(q["kind"], "lead_score");
    for field in [
        "pending",
        "scheduled",
        "running",
        "done",
        "failed",
        "dead",
        "retries",
    ] {
        assert!(q[field].is_u64(), "{field} missing from {q}");
    }
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{status}");
    let w = &workers[0];
    assert_eq!(w["id"], worker.id.as_str());
    assert_eq!(w["kinds"], serde_json::json!(leadq_jobs::kinds::names()));
    let beat: DateTime<Utc> = w["last_heartbeat"].as_str().unwrap().parse().unwrap();
    assert!(
        (Utc::now() - beat).num_seconds().abs() < 10,
        "stale heartbeat {beat}"
    );
    assert!(w["host"].as_str().is_some_and(|h| !h.is_empty()));

    // A stopped worker leaves the registry at once.
    worker.stop().await;
    let s: Value = app
        .get("/v1/status", app.operator_token())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["workers"], serde_json::json!([]));
    app.stop().await;
}

/// `LEADQ_WORKER_KINDS`: a deployment per kind. A worker given only `chatwoot_event` never
/// takes a lead; one given `lead_score` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_only_the_kinds_it_is_given() {
    let app = spawn_app().await;
    let only = |kind: &'static str| {
        let mut settings = app.settings.clone();
        settings.queue.worker_kinds = vec![kind];
        leadq_testkit::TestWorker::spawn(settings)
    };
    let chat = only("chatwoot_event").await;
    let res = app.post_lead(app.key(), &sample_lead("tg-kinds")).await;
    assert_eq!(res.status(), 202);
    let lead_queue = |s: &Value| {
        s["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["kind"] == "lead_score")
            .cloned()
            .unwrap()
    };
    // The chat worker is fetching (it woke on the enqueue like any worker would) and still
    // leaves the lead alone.
    let status = || async {
        let res = app.get("/v1/status", app.operator_token()).await;
        res.json::<Value>().await.unwrap()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = status().await;
    assert_eq!(
        s["workers"][0]["kinds"],
        serde_json::json!(["chatwoot_event"])
    );
    let q = lead_queue(&s);
    assert_eq!(
        (q["pending"].as_u64(), q["done"].as_u64()),
        (Some(1), Some(0)),
        "{q}"
    );

    let score = only("lead_score").await;
    wait_for("the lead scored", Duration::from_secs(20), || async {
        (lead_queue(&status().await)["done"] == 1).then_some(())
    })
    .await;
    chat.stop().await;
    score.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer_on_both_processes() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    let res = app.post_lead(app.key(), &sample_lead("tg-m")).await;
    assert_eq!(res.status(), 202);
    wait_for("the job", Duration::from_secs(20), || async {
        let c = app.queue.counts("lead_score").await.unwrap();
        (c.done == 1).then_some(())
    })
    .await;
    let worker_base = format!("http://{}", worker.health);
    for base in [app.address.as_str(), worker_base.as_str()] {
        let healthz = app
            .client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(healthz.status(), 200);
        let readyz: Value = app
            .client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(readyz["status"], "ready", "{base}: {readyz}");
    }
    let api_metrics = app.text(&format!("{}/metrics", app.address)).await;
    let worker_metrics = app.text(&format!("{worker_base}/metrics")).await;
    for (text, names) in [
        (
            &api_metrics,
            &[
                "leadq_http_requests_total{route=\"/v1/leads\",method=\"POST\",status=\"202\"}",
                "leadq_http_request_duration_seconds_bucket{route=\"/v1/leads\"",
                "leadq_queue_depth{kind=\"lead_score\",state=\"pending\"}",
            ][..],
        ),
        (
            &worker_metrics,
            &[
                "leadq_jobs_total{kind=\"lead_score\",outcome=\"completed\"}",
                "leadq_job_duration_seconds_bucket{kind=\"lead_score\"",
                "leadq_job_wait_seconds_bucket{kind=\"lead_score\"",
                "leadq_queue_depth{kind=\"lead_score\",state=\"running\"}",
                &format!(
                    "leadq_worker_heartbeat_timestamp_seconds{{worker=\"{}\"}}",
                    worker.id
                ),
                "leadq_job_retries_total{kind=\"lead_score\"}",
            ][..],
        ),
    ] {
        for name in names {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
    worker.stop().await;
    app.stop().await;
}
