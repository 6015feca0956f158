//! The chat SLA: an agent's first reply to a contact's message is measured from the message
//! (`leadq_chat_first_reply_seconds`), once per wait, whatever Chatwoot redelivers.

use std::time::Duration;

use leadq_testkit::{wait_for, TestApp};
use serde_json::{json, Value};

use crate::webhooks::{configured_app, message_body, post_chatwoot};

/// An agent's reply in conversation 3 of contact 42, `secs` after the contact's message.
fn reply_body(message_id: i64, secs: i64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&message_body(7, message_id, false, "outgoing"))
        .expect("a message body");
    v["sender"] = json!({"id": 5, "name": "Grace", "email": "grace@acme.test", "type": "user"});
    let at = chrono::DateTime::parse_from_rfc3339("2026-06-17T10:00:00Z").unwrap()
        + chrono::TimeDelta::seconds(secs);
    v["created_at"] = json!(at.to_rfc3339());
    serde_json::to_vec(&v).unwrap()
}

async fn answered(app: &TestApp) -> Vec<Option<chrono::DateTime<chrono::Utc>>> {
    sqlx::query_scalar("select replied_at from lead_messages order by sent_at")
        .fetch_all(&mut *app.own().await)
        .await
        .unwrap()
}

fn histogram_count(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with("leadq_chat_first_reply_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_first_reply_is_measured_once_from_the_contacts_message() {
    let app = configured_app().await;
    let worker = app.spawn_worker().await;
    let res = post_chatwoot(&app, &message_body(7, 901, false, "incoming"), "d-901").await;
    assert_eq!(res.status(), 200);
    wait_for("the incoming message", Duration::from_secs(10), || async {
        (answered(&app).await.len() == 1).then_some(())
    })
    .await;
    // Its text is stored sealed for the tenant (leadq_jobs::pii::at_rest).
    let content: String = sqlx::query_scalar("select content from lead_messages")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert!(content.starts_with("sealed:v1:"), "{content}");
    assert_eq!(
        app.sealer()
            .open(app.tenant.tenant_id, "content", &content)
            .unwrap(),
        "Hello <team> & thanks, we need a CRM"
    );

    assert_eq!(
        post_chatwoot(&app, &reply_body(902, 90), "d-902")
            .await
            .status(),
        200
    );
    let replied = wait_for("the reply", Duration::from_secs(10), || async {
        answered(&app).await[0]
    })
    .await;
    assert_eq!(replied.to_rfc3339(), "2026-06-17T10:01:30+00:00");
    let url = format!("http://{}/metrics", worker.health);
    let metrics = app.text(&url).await;
    assert_eq!(histogram_count(&metrics), Some(1.0), "{metrics}");
    assert!(
        metrics.contains("leadq_chat_first_reply_seconds_sum 90"),
        "{metrics}"
    );

    // A second reply ends no wait; a bot's message is not a reply at all.
    assert_eq!(
        post_chatwoot(&app, &reply_body(903, 200), "d-903")
            .await
            .status(),
        200
    );
    let mut bot: Value = serde_json::from_slice(&reply_body(904, 300)).unwrap();
    bot["sender"]["type"] = json!("agent_bot");
    let res = post_chatwoot(&app, &serde_json::to_vec(&bot).unwrap(), "d-904").await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ignored");
    wait_for(
        "the second reply to run",
        Duration::from_secs(10),
        || async {
            let q = app
                .queue
                .counts(leadq_jobs::kinds::CHATWOOT_EVENT)
                .await
                .unwrap();
            (q.pending + q.running + q.scheduled == 0).then_some(())
        },
    )
    .await;
    let metrics = app.text(&url).await;
    assert_eq!(histogram_count(&metrics), Some(1.0), "{metrics}");
    worker.stop().await;
    app.stop().await;
}
