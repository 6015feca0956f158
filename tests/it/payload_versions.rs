//! Payload versions side by side: `lead_score` versions 1 and 2 in one queue, the API writing
//! version 2 only for what version 1 cannot carry, and versions a kind does not read
//! dead-lettered `unsupported_version` (README, "Payload versions").

use std::time::Duration;

use leadq_jobs::kinds;
use leadq_queue::envelope::Envelope;
use leadq_queue::NewJob;
use leadq_testkit::{lead_job, spawn_app, wait_for, TestApp};
use serde_json::{json, Value};

/// A `lead_score` job of the test tenant's key in payload `version`, its email sealed as every
/// producer seals it.
fn versioned_lead(app: &TestApp, version: u32, message_id: &str, mut lead: Value) -> NewJob {
    let mut email = lead["email"].as_str().map(str::to_owned);
    let mut phone = None;
    app.sealer()
        .seal_contact(app.tenant.tenant_id, &mut email, &mut phone);
    lead["email"] = json!(email);
    let mut job = lead_job(
        app.tenant.tenant_id,
        &app.key_actor(),
        message_id,
        message_id,
        lead,
    );
    job.envelope.schema_version = version;
    job
}

/// The stored answers, score, tier and email of a lead of the test tenant.
async fn stored(
    app: &TestApp,
    external_id: &str,
) -> (Value, Option<i32>, Option<String>, Option<String>) {
    sqlx::query_as::<
        _,
        (
            sqlx::types::Json<Value>,
            Option<i32>,
            Option<String>,
            Option<String>,
        ),
    >("select answers, score, tier, email from leads where tenant_id = $1 and external_id = $2")
    .bind(app.tenant.tenant_id)
    .bind(external_id)
    .fetch_one(&mut *app.own().await)
    .await
    // The email is stored sealed (leadq_jobs::pii::at_rest): compared opened.
    .map(|(a, s, t, e)| {
        let e = e.map(|e| {
            app.sealer()
                .open(app.tenant.tenant_id, "email", &e)
                .unwrap()
        });
        (a.0, s, t, e)
    })
    .unwrap()
}

async fn wait_done(app: &TestApp, kind: &str, n: u64) {
    wait_for(
        &format!("{n} {kind} jobs done"),
        Duration::from_secs(20),
        || async { (app.queue.counts(kind).await.unwrap().done == n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_lead_jobs_share_a_queue_and_equivalent_content_scores_the_same() {
    let app = spawn_app().await;
    // Arrange: pairs of the same content, interleaved in one enqueue.
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.push(versioned_lead(
            &app,
            1,
            &format!("v1-{i}"),
            json!({
                "external_id": format!("v1-{i}"), "source": "web", "email": "ada@example.com",
                "answers": {"decision_maker": "true", "budget": "20000", "ratio": "2.5",
                            "timeline": "this quarter"},
            }),
        ));
        jobs.push(versioned_lead(
            &app,
            2,
            &format!("v2-{i}"),
            json!({
                "external_id": format!("v2-{i}"), "source": "web", "email": "ada@example.com",
                "answers": {"decision_maker": true, "budget": 20000, "ratio": 2.5,
                            "timeline": "this quarter"},
            }),
        ));
    }
    app.queue.enqueue(jobs).await.unwrap();

    // Act
    let worker = app.spawn_worker().await;
    wait_done(&app, "lead_score", 8).await;

    // Assert: stored alike, byte for byte, and scored alike.
    for i in 0..4 {
        let v1 = stored(&app, &format!("v1-{i}")).await;
        let v2 = stored(&app, &format!("v2-{i}")).await;
        assert_eq!(v1, v2, "pair {i}");
        assert_eq!(
            v1.1,
            Some(20 + 15 + 10),
            "budget 10k-50k, this quarter, reachable"
        );
        assert_eq!(v1.3.as_deref(), Some("ada@example.com"));
        assert_eq!(v2.0["decision_maker"], "true");
        assert_eq!(v2.0["budget"], "20000");
    }
    assert_eq!(app.queue.counts("lead_score").await.unwrap().dead, 0);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_job_with_consent_leaves_a_lead_consent_audit_row_without_personal_data() {
    let app = spawn_app().await;
    let job = versioned_lead(
        &app,
        2,
        "consent-1",
        json!({
            "external_id": "tg-consent", "source": "telegram", "email": "ada@example.com",
            "answers": {"budget": 20000},
            "consent": {"marketing": true, "given_at": "2026-03-01T13:00:00+01:00",
                        "text_version": "2026-01"},
        }),
    );
    let job_id = app.queue.enqueue(vec![job]).await.unwrap()[0].job_id;
    let worker = app.spawn_worker().await;
    wait_done(&app, "lead_score", 1).await;

    let lead_id: uuid::Uuid =
        sqlx::query_scalar("select id from leads where tenant_id = $1 and external_id = $2")
            .bind(app.tenant.tenant_id)
            .bind("tg-consent")
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
    let rows: Vec<(String, String, String, Value)> = sqlx::query_as(
        "select subject, outcome, actor, details from audit_log
          where tenant_id = $1 and action = 'lead.consent'",
    )
    .bind(app.tenant.tenant_id)
    .fetch_all(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let (subject, outcome, actor, details) = &rows[0];
    assert_eq!(subject, &format!("lead:{lead_id}"));
    assert_eq!((outcome.as_str(), actor.clone()), ("ok", app.key_actor()));
    assert_eq!(
        details,
        &json!({"marketing": true, "given_at": "2026-03-01T12:00:00Z",
                "text_version": "2026-01", "job_id": job_id})
    );
    assert!(!details.to_string().contains("ada@"));
    // The change itself went the usual way.
    let (answers, score, _, _) = stored(&app, "tg-consent").await;
    assert_eq!(
        (answers["budget"].clone(), score),
        (json!("20000"), Some(30))
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_a_kind_does_not_read_is_dead_lettered_unsupported_version() {
    let app = spawn_app().await;
    // lead_score reads 1 and 2, not 3; crm_sync (like every other kind) reads 1 only.
    let v3 = versioned_lead(
        &app,
        3,
        "v3-1",
        json!({"external_id": "v3", "source": "web"}),
    );
    let sync = NewJob::now(
        Envelope::new(
            app.tenant.tenant_id,
            "system:lead_score",
            kinds::CRM_SYNC,
            json!({"lead_id": uuid::Uuid::new_v4(), "version": 1}),
        )
        .schema_version(2),
    );
    let v3_id = app.queue.enqueue(vec![v3]).await.unwrap()[0].job_id;
    let sync_id = app.queue.enqueue(vec![sync]).await.unwrap()[0].job_id;
    let worker = app.spawn_worker().await;

    for (kind, id) in [(kinds::LEAD_SCORE, v3_id), (kinds::CRM_SYNC, sync_id)] {
        let dead = wait_for(
            &format!("{kind} dead-lettered"),
            Duration::from_secs(20),
            || {
                let queue = app.queue.clone();
                async move {
                    queue
                        .dead_letters(kind, 10)
                        .await
                        .unwrap()
                        .into_iter()
                        .find(|d| d.job_id == id)
                }
            },
        )
        .await;
        assert_eq!(
            (dead.reason.as_str(), dead.last_error_code.as_str()),
            ("unsupported_version", "unsupported_version"),
            "{kind}"
        );
        // Kept as enqueued, for a re-drive once workers read the version.
        assert_eq!(
            dead.envelope.map(|e| e.schema_version),
            Some(if kind == kinds::LEAD_SCORE { 3 } else { 2 })
        );
        let counts = app.queue.counts(kind).await.unwrap();
        assert_eq!((counts.dead, counts.done), (1, 0), "{kind}");
    }
    // Nothing was guessed: no lead was written.
    let leads: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(leads, 0);
    worker.stop().await;
    app.stop().await;
}

/// The envelopes waiting in the test tenant's `lead_score` queue, by message id.
async fn waiting_envelopes(app: &TestApp) -> Vec<Envelope> {
    let mut conn = crate::redis_conn().await;
    let mut envelopes: Vec<Envelope> = redis::cmd("HVALS")
        .arg(format!("{{{}:lead_score}}:jobs", app.settings.queue.prefix))
        .query_async::<Vec<String>>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.starts_with('{')) // the envelope; other fields hold the tenant id
        .map(|v| serde_json::from_str(&v).unwrap())
        .collect();
    envelopes.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    envelopes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_writes_version_2_only_for_a_yes_no_answer_or_consent_and_the_lead_is_scored() {
    let app = spawn_app().await;
    let bodies = [
        (
            "a-plain",
            json!({"budget": 20000, "timeline": "this quarter"}),
            None,
        ),
        (
            "b-flag",
            json!({"budget": 20000, "timeline": "this quarter", "decision_maker": true}),
            None,
        ),
        (
            "c-consent",
            json!({"budget": "20000"}),
            Some(json!({"marketing": false, "given_at": "2026-03-01T12:00:00Z"})),
        ),
    ];
    for (id, answers, consent) in &bodies {
        let mut body = json!({"external_id": id, "source": "web", "email": "ada@example.com",
                              "answers": answers, "message_id": id});
        if let Some(c) = consent {
            body["consent"] = c.clone();
        }
        let res = app.post_lead(app.key(), &body).await;
        assert_eq!(res.status(), 202, "{id}");
    }

    // Version 1 for what it can carry (answers in text, as ever); 2 otherwise; sealed alike.
    let envelopes = waiting_envelopes(&app).await;
    let got: Vec<(&str, u32)> = envelopes
        .iter()
        .map(|e| (e.message_id.as_str(), e.schema_version))
        .collect();
    assert_eq!(got, vec![("a-plain", 1), ("b-flag", 2), ("c-consent", 2)]);
    assert_eq!(envelopes[0].payload["answers"]["budget"], "20000");
    assert_eq!(envelopes[1].payload["answers"]["decision_maker"], true);
    assert_eq!(envelopes[1].payload["answers"]["budget"], 20000);
    for e in &envelopes {
        assert!(
            !e.payload.to_string().contains("ada@example.com"),
            "{}",
            e.message_id
        );
    }

    let worker = app.spawn_worker().await;
    wait_done(&app, "lead_score", 3).await;
    let plain = stored(&app, "a-plain").await;
    let flag = stored(&app, "b-flag").await;
    assert_eq!(plain.1, Some(45));
    assert_eq!(flag.1, plain.1);
    assert_eq!(flag.0["decision_maker"], "true");
    assert_eq!(flag.3.as_deref(), Some("ada@example.com"));
    let consents: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where tenant_id = $1 and action = 'lead.consent'",
    )
    .bind(app.tenant.tenant_id)
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(consents, 1);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_consent_is_a_422_with_field_codes_and_nothing_is_enqueued() {
    let app = spawn_app().await;
    let cases = [
        (
            json!("yes"),
            json!([{"field": "consent", "code": "invalid_format"}]),
        ),
        (
            json!([true]),
            json!([{"field": "consent", "code": "invalid_format"}]),
        ),
        (
            json!({"marketing": true, "given_at": "1 March 2026"}),
            json!([{"field": "consent.given_at", "code": "invalid_format"}]),
        ),
        (
            json!({"marketing": true, "given_at": "2026-03-01T12:00:00"}),
            json!([{"field": "consent.given_at", "code": "invalid_format"}]),
        ),
        (
            json!({"marketing": "yes", "given_at": 1_700_000_000}),
            json!([{"field": "consent.marketing", "code": "invalid_format"},
                   {"field": "consent.given_at", "code": "invalid_format"}]),
        ),
        (
            json!({}),
            json!([{"field": "consent.marketing", "code": "required"},
                   {"field": "consent.given_at", "code": "required"}]),
        ),
        (
            json!({"marketing": true, "given_at": "2026-03-01T12:00:00Z",
                   "text_version": "v".repeat(65)}),
            json!([{"field": "consent.text_version", "code": "too_long"}]),
        ),
        (
            json!({"marketing": true, "given_at": "2026-03-01T12:00:00Z", "text_version": "a\nb"}),
            json!([{"field": "consent.text_version", "code": "invalid_format"}]),
        ),
    ];
    for (consent, details) in cases {
        let body = json!({"external_id": "tg-1", "source": "web", "consent": consent});
        let res = app.post_lead(app.key(), &body).await;
        assert_eq!(res.status(), 422, "{consent}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], "validation_failed", "{consent}");
        assert_eq!(err["error"]["details"], details, "{consent}");
    }
    let counts = app.queue.counts("lead_score").await.unwrap();
    assert_eq!((counts.pending, counts.scheduled), (0, 0));
    app.stop().await;
}
