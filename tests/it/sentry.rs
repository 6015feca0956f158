//! Sentry per request and per job: every event carries the tags of its own request (route,
//! correlation id) or job (kind, job id, attempt, tenant), never another's, from the real
//! `leadq api` and `leadq worker` processes reporting to a stand-in for Sentry's ingestion.

use std::process::Command;
use std::time::Duration;

use leadq_jobs::integrations::settings::TenantUpdate;
use leadq_platform::keyring::Keyring;
use leadq_platform::secret::Secret;
use leadq_testkit::{lead_job, spawn_app, wait_for};

use crate::secrets::{fake_sentry, free_port, start};

fn event_with<'a>(events: &'a [String], needle: &str) -> Option<&'a String> {
    events.iter().find(|e| e.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_error_and_a_job_error_each_carry_their_own_tags() {
    let app = spawn_app().await;
    let (sentry_port, sentry) = fake_sentry().await;
    let dir = std::env::temp_dir().join(format!("leadq-sentry-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let api_port = free_port();
    let mut api = start(
        &app,
        "api",
        "LEADQ_API_ADDR",
        api_port,
        sentry_port,
        &dir.join("api.log"),
        &[],
    );
    let mut worker = start(
        &app,
        "worker",
        "LEADQ_API_ADDR",
        free_port(),
        sentry_port,
        &dir.join("worker.log"),
        &[],
    );
    let base = format!("http://127.0.0.1:{api_port}");
    let client = reqwest::Client::new();
    wait_for("the API", Duration::from_secs(20), || {
        let (c, url) = (client.clone(), format!("{base}/readyz"));
        async move { c.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;

    // A tenant whose Chatwoot secret was sealed with a data key the API no longer has: its
    // webhook fails with a 500, which is reported.
    let lost = app.other_tenant().await;
    leadq_jobs::integrations::settings::update(
        &app.db.pool,
        &leadq_jobs::pii::Sealer::new(Keyring::random("gone"), Keyring::random("gone")),
        &lost.slug,
        &TenantUpdate {
            chatwoot_account_id: Some(7),
            chatwoot_secret: Some(Secret::new("s3cret-that-cannot-open")),
            ..TenantUpdate::default()
        },
        "operator:test",
    )
    .await
    .unwrap();
    let res = client
        .post(format!("{base}/v1/webhooks/chatwoot/{}", lost.slug))
        .header("x-correlation-id", "corr-sentry-api")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);

    // A job that fails for good: a lead without its required fields, from a genuine producer.
    let job = lead_job(
        app.tenant.tenant_id,
        &app.key_actor(),
        "m-sentry-job",
        "corr-sentry-job",
        serde_json::json!({"external_id": "", "source": ""}),
    );
    let job_id = app.queue.enqueue(vec![job]).await.unwrap()[0].job_id;

    let (api_event, job_event) =
        wait_for("both events at Sentry", Duration::from_secs(30), || async {
            let events = sentry.lock().unwrap().clone();
            let api = event_with(&events, "corr-sentry-api").cloned();
            let job = event_with(&events, &job_id.to_string()).cloned();
            api.zip(job)
        })
        .await;
    assert!(
        api_event.contains(r#""route":"/v1/webhooks/chatwoot/{tenant}""#),
        "{api_event}"
    );
    assert!(
        api_event.contains(r#""correlation_id":"corr-sentry-api""#),
        "{api_event}"
    );
    assert!(!api_event.contains("corr-sentry-job"), "{api_event}");
    for tag in [
        r#""kind":"lead_score""#.to_owned(),
        format!(r#""job_id":"{job_id}""#),
        format!(r#""tenant_id":"{}""#, app.tenant.tenant_id),
        format!(r#""tenant":"{}""#, app.tenant.slug),
        r#""correlation_id":"corr-sentry-job""#.to_owned(),
    ] {
        assert!(job_event.contains(&tag), "{tag} not in {job_event}");
    }
    assert!(!job_event.contains("corr-sentry-api"), "{job_event}");
    for child in [&mut api, &mut worker] {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}
