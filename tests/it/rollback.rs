//! Rollback compatibility: the previous release's worker binary runs what this release's API
//! enqueues (docs/rollout.md, "Rolling back"). `scripts/rollback-test` builds the previous
//! release (the commit in `scripts/rollback/previous-release`) and runs this test with its
//! binary as `LEADQ_OLD_BIN`; `scripts/test` leaves it out (it needs that build).

use std::process::Stdio;
use std::time::Duration;

use leadq_testkit::{sample_lead, wait_for, TestApp};
use serde_json::{json, Value};

use crate::secrets::free_port;
use crate::webhooks::{configured_app, message_body, post_chatwoot};

/// The previous release's `leadq worker`, with `app`'s database, Redis key space and keys.
fn old_worker(app: &TestApp, log: &std::path::Path) -> std::process::Child {
    #[allow(clippy::disallowed_methods)]
    let bin = std::env::var("LEADQ_OLD_BIN")
        .expect("LEADQ_OLD_BIN: the previous release's leadq (run through scripts/rollback-test)");
    crate::leadq_cmd_at(&bin, app)
        .arg("worker")
        .env("LEADQ_WORKER_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("LEADQ_LEASE_MS", "3000")
        .env("LEADQ_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start the previous release's worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs LEADQ_OLD_BIN, the previous release's binary: scripts/rollback-test"]
async fn a_previous_release_worker_runs_what_this_release_enqueues() {
    let app = configured_app().await;
    let log = std::env::temp_dir().join(format!("leadq-rollback-{}.log", uuid::Uuid::new_v4()));
    // This release's API (in this process) enqueues, with no worker of its own: leads of
    // payload version 1, one with a yes/no answer (version 2) and a Chatwoot message.
    for i in 0..20 {
        let mut lead = sample_lead(&format!("tg-{i}"));
        lead["phone"] = json!("+44 7700 900123");
        assert_eq!(app.post_lead(app.key(), &lead).await.status(), 202);
    }
    let mut v2 = sample_lead("tg-v2");
    v2["answers"]["decision_maker"] = json!(true);
    assert_eq!(app.post_lead(app.key(), &v2).await.status(), 202);
    let res = post_chatwoot(&app, &message_body(7, 901, false, "incoming"), "d-901").await;
    assert_eq!(res.status(), 200);

    // Rolled back: the previous release's worker takes over the queues.
    let mut worker = old_worker(&app, &log);
    let settled = wait_for(
        "the previous worker ran the jobs",
        Duration::from_secs(60),
        || async {
            let leads = app.queue.counts("lead_score").await.unwrap();
            let chat = app.queue.counts("chatwoot_event").await.unwrap();
            (leads.done + leads.dead == 21 && chat.done == 1).then_some(leads)
        },
    )
    .await;
    worker.kill().ok();
    worker.wait().ok();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        settled.done, 20,
        "every version 1 lead completed:\n{log_text}"
    );

    // A version 2 payload is never run as something it is not: dead-lettered, kept whole for
    // a re-drive once this release is back.
    let dead = app.queue.dead_letters("lead_score", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let env = dead[0].envelope.as_ref().expect("the envelope kept");
    assert_eq!(env.payload["external_id"], "tg-v2");
    assert_eq!(env.schema_version, 2);
    eprintln!(
        "the previous release dead-lettered the version 2 lead as {} ({})",
        dead[0].reason, dead[0].last_error_code
    );

    // What it wrote reads back through this release's API, scored, contact intact.
    let lead: Value = app
        .get("/v1/leads/tg-3", app.key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lead["email"], "ada@example.com", "{lead}");
    assert_eq!(lead["phone"], "+44 7700 900123");
    assert!(lead["score"].as_i64().is_some_and(|s| s > 0), "{lead}");

    // Rolled forward again: the conversion seals what the previous release wrote in clear.
    crate::leadq_ok(&app, &["lead", "reseal"], &[]);
    let clear: i64 = sqlx::query_scalar(
        "select count(*) from leads where not starts_with(email, 'sealed:v1:')
            or not starts_with(phone, 'sealed:v1:')",
    )
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(clear, 0);
    let lead: Value = app
        .get("/v1/leads/tg-3", app.key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lead["email"], "ada@example.com");
    let _ = std::fs::remove_file(&log);
    app.stop().await;
}
