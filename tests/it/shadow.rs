//! Shadow comparison: a tenant's candidate scoring rules run beside its live rules; each job
//! that scores a new version records both outcomes, and `leadq shadow report` summarises them.

use std::time::Duration;

use leadq_testkit::{sample_lead, spawn_app, wait_for, TestApp};
use serde_json::{json, Value};

fn shadow(app: &TestApp, args: &[&str]) -> (i32, Value) {
    let out = crate::leadq_cmd(app)
        .arg("shadow")
        .args(args)
        .env("LEADQ_OPERATOR", "scoring-team")
        .output()
        .expect("run leadq shadow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), value)
}

/// Waits until the report's `field` reaches `want`, and returns the report.
async fn report_when(app: &TestApp, field: &str, want: i64) -> Value {
    let slug = app.tenant.slug.clone();
    wait_for(
        &format!("report {field} = {want}"),
        Duration::from_secs(20),
        || async {
            let (rc, r) = shadow(app, &["report", "--tenant", &slug]);
            (rc == 0 && r[field] == want).then_some(r)
        },
    )
    .await
}

async fn live_tier(app: &TestApp, external_id: &str) -> String {
    let mut tx = tenant_tx(app).await;
    sqlx::query_scalar("select tier from leads where external_id = $1")
        .bind(external_id)
        .fetch_one(&mut *tx)
        .await
        .unwrap()
}

async fn tenant_tx(app: &TestApp) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let scope = leadq_platform::db::Scope::Tenant(app.tenant.tenant_id);
    leadq_platform::db::begin(&app.db.pool, scope)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_rules_are_compared_with_the_live_ones_on_every_new_version() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    let slug = app.tenant.slug.clone();
    let post = |lead: Value| {
        let app = &app;
        async move {
            let res = app.post_lead(app.key(), &lead).await;
            assert_eq!(res.status(), 202);
        }
    };

    let set_mode = |mode: &'static str| {
        let (pool, slug) = (&app.db.pool, &slug);
        async move {
            let by = "operator:test";
            leadq_platform::tenant::set_kind_mode(pool, by, slug, "lead_score", mode)
                .await
                .unwrap();
        }
    };

    // Refused input names the problem; nothing is stored.
    let (rc, _) = shadow(
        &app,
        &[
            "rules",
            &slug,
            "--hot-threshold",
            "30",
            "--warm-threshold",
            "60",
        ],
    );
    assert_eq!(rc, 2);
    let (rc, _) = shadow(&app, &["rules", "no-such-tenant", "--hot-threshold", "90"]);
    assert_eq!(rc, 2);

    // Candidate: every lead below 100 points is cold.
    let (rc, set) = shadow(
        &app,
        &[
            "rules",
            &slug,
            "--hot-threshold",
            "100",
            "--warm-threshold",
            "100",
        ],
    );
    assert_eq!(rc, 0, "{set}");
    assert_eq!(set["rules"]["hot_threshold"], 100);

    post(sample_lead("tg-hot")).await;
    post(json!({"external_id": "tg-cold", "source": "telegram"})).await;
    let r = report_when(&app, "compared", 2).await;
    let hot = live_tier(&app, "tg-hot").await;
    assert_eq!(live_tier(&app, "tg-cold").await, "cold");
    assert_ne!(
        hot, "cold",
        "the sample lead must not be cold for this test"
    );
    assert_eq!(
        (r["agree"].as_i64(), r["disagree"].as_i64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(r["moves"], json!([[format!("{hot}->cold"), 1]]), "{r}");
    assert!(
        r["mean_score_change"].as_f64() == Some(0.0),
        "same weights, same scores: {r}"
    );

    // A replay makes no new version, so no new comparison; a real change does. (The change is
    // sent once the replay has run: run together, the change could commit first, and the
    // replay would then be a change back, a version of its own.)
    post(sample_lead("tg-hot")).await;
    wait_for("the replay to run", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 3).then_some(())
    })
    .await;
    let mut changed = sample_lead("tg-hot");
    changed["answers"]["budget"] = json!("under_5k");
    post(changed).await;
    let r = report_when(&app, "compared", 3).await;
    assert_eq!(r["shadow_only"], 0);

    // A kind in shadow mode has only a would-be outcome.
    set_mode("shadow").await;
    post(sample_lead("tg-shadow")).await;
    let r = report_when(&app, "shadow_only", 1).await;
    assert_eq!(r["compared"], 3);

    // Cleared: comparisons stop, the recorded ones stay; both changes are audited.
    set_mode("enabled").await;
    let (rc, cleared) = shadow(&app, &["clear", &slug]);
    assert_eq!((rc, &cleared["cleared"]), (0, &json!(true)));
    post(sample_lead("tg-after")).await;
    wait_for("tg-after stored", Duration::from_secs(20), || async {
        let mut tx = tenant_tx(&app).await;
        sqlx::query_scalar::<_, i64>("select count(*) from leads where external_id = 'tg-after'")
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .eq(&1)
            .then_some(())
    })
    .await;
    let (_, r) = shadow(&app, &["report", "--tenant", &slug]);
    assert_eq!(
        (r["compared"].as_i64(), r["shadow_only"].as_i64()),
        (Some(3), Some(1)),
        "{r}"
    );
    let trail: Value = app
        .get("/v1/audit?action=shadow.rules_set", app.key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        trail["entries"].as_array().map(Vec::len),
        Some(1),
        "{trail}"
    );
    assert_eq!(trail["entries"][0]["actor"], "operator:scoring-team");

    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatwoot_events_are_compared_under_their_kind_in_a_batch_and_alone() {
    // Every path that writes a lead version records the comparison: a conversation event in
    // its own transaction (`chatwoot::handler::apply_alone`), a contact change and a message
    // through the group commit (that they take it: `lead_messages::contact_changes_…` and
    // `webhooks::a_thousand_concurrent_…`).
    use crate::webhooks::{
        configured_app, conversation_body, message_body, post_chatwoot, ACCOUNT,
    };
    let app = configured_app().await;
    let slug = app.tenant.slug.clone();
    let (rc, set) = shadow(&app, &["rules", &slug, "--hot-threshold", "100"]);
    assert_eq!(rc, 0, "{set}");
    let worker = app.spawn_worker().await;
    let comparisons = |n: usize| {
        let app = &app;
        async move {
            wait_for(
                &format!("{n} comparisons"),
                Duration::from_secs(20),
                || async {
                    let mut tx = tenant_tx(app).await;
                    let rows: Vec<(String, String)> =
                        sqlx::query_as("select kind, subject from shadow_comparisons")
                            .fetch_all(&mut *tx)
                            .await
                            .unwrap();
                    (rows.len() == n).then_some(rows)
                },
            )
            .await
        }
    };
    // The lead is created by a conversation event (alone), then changed by a contact event
    // (its phone) and a message (a batch each).
    let conversation = conversation_body("conversation_created", "open", 1_781_690_400.5);
    assert_eq!(
        post_chatwoot(&app, &conversation, "v-1").await.status(),
        200
    );
    comparisons(1).await;
    let contact = serde_json::to_vec(&json!({"account": {"id": ACCOUNT, "name": "Acme"},
        "additional_attributes": {}, "avatar": "", "custom_attributes": {},
        "email": "ada@example.com", "id": 42, "identifier": null, "name": "Ada Lovelace",
        "phone_number": "+447700900123", "thumbnail": "", "blocked": false,
        "event": "contact_updated"}))
    .unwrap();
    assert_eq!(post_chatwoot(&app, &contact, "c-1").await.status(), 200);
    comparisons(2).await;
    let message = message_body(ACCOUNT, 901, false, "incoming");
    assert_eq!(post_chatwoot(&app, &message, "m-1").await.status(), 200);
    let all = comparisons(3).await;
    let mut tx = tenant_tx(&app).await;
    let lead: uuid::Uuid = sqlx::query_scalar("select id from leads where external_id = 'cw-7-42'")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let subject = format!("lead:{lead}");
    assert!(
        all.iter()
            .all(|(k, s)| k == "chatwoot_event" && *s == subject),
        "{all:?}"
    );
    let versions: i64 = sqlx::query_scalar("select version from leads where id = $1")
        .bind(lead)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(versions, 3, "one version for each event");
    drop(tx);
    worker.stop().await;
    app.stop().await;
}
