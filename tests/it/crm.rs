//! `crm_sync` against a fake HubSpot at the HTTP boundary, speaking HubSpot's real shapes
//! (`docs/contracts/hubspot.md`): batch upsert keyed by email, string property values, 200 and
//! 207 bodies, 429 bodies naming their policy, the OAuth token endpoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadq_jobs::integrations::settings::{CrmAuth, CrmSettings, TenantUpdate};
use leadq_testkit::{sample_lead, spawn_app_with, wait_for, TestApp};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub(crate) const UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";

/// HubSpot's batch upsert, keeping contacts by email: 200 when every input was written, 207
/// with `errors[].context.ids` for inputs whose email contains `invalid` (a validation error).
/// Refuses (400) any property value that is not a string, as HubSpot does.
#[derive(Clone, Default)]
pub(crate) struct FakeHubSpot {
    pub(crate) contacts: Arc<Mutex<BTreeMap<String, String>>>,
    token: String,
}

impl Respond for FakeHubSpot {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bearer {}", self.token) {
            return ResponseTemplate::new(401).set_body_json(json!({"status": "error",
                "message": "Authentication credentials not found.", "correlationId": "c-401",
                "category": "INVALID_AUTHENTICATION"}));
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let inputs = body["inputs"].as_array().cloned().unwrap_or_default();
        if inputs.is_empty() || inputs.len() > 100 {
            return ResponseTemplate::new(400).set_body_json(json!({"status": "error",
                "message": "inputs must hold 1-100 items", "category": "VALIDATION_ERROR"}));
        }
        let mut results = Vec::new();
        let mut failed = Vec::new();
        let mut contacts = self.contacts.lock().unwrap();
        for i in &inputs {
            let props = i["properties"].as_object().cloned().unwrap_or_default();
            // The unique property the input names: `email`, or a custom one (as a tenant's
            // `id_property` sets it), whose values HubSpot keeps as they are.
            let id_property = i["idProperty"].as_str().unwrap_or("").to_owned();
            if props.values().any(|v| !v.is_string())
                || id_property.is_empty()
                || !id_property
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                return ResponseTemplate::new(400).set_body_json(json!({"status": "error",
                    "message": "Property values must be strings", "category": "VALIDATION_ERROR"}));
            }
            let id = i["id"].as_str().unwrap_or("").to_owned();
            if id.contains("invalid") {
                failed.push(id);
                continue;
            }
            let next = (contacts.len() + 1001).to_string();
            let is_new = !contacts.contains_key(&id);
            let record = contacts.entry(id.clone()).or_insert(next).clone();
            let mut properties = props.clone();
            properties.insert(id_property, json!(id));
            results.push(
                json!({"id": record, "properties": properties, "new": is_new,
                "createdAt": "2026-11-23T10:00:00.000Z", "updatedAt": "2026-11-23T10:00:00.000Z",
                "archived": false}),
            );
        }
        let mut out = json!({"status": "COMPLETE", "results": results,
            "startedAt": "2026-11-23T10:00:00.000Z", "completedAt": "2026-11-23T10:00:00.100Z"});
        if failed.is_empty() {
            return ResponseTemplate::new(200).set_body_json(out);
        }
        out["numErrors"] = json!(1);
        out["errors"] = json!([{"status": "error", "category": "VALIDATION_ERROR",
            "message": "Property values were not valid", "context": {"ids": failed},
            "errors": [{"message": "INVALID_EMAIL", "code": "INVALID_EMAIL"}], "links": {}}]);
        ResponseTemplate::new(207).set_body_json(out)
    }
}

/// A fake HubSpot that answers contact upserts made with `token`.
pub(crate) async fn hubspot_accepting(token: &str) -> (MockServer, FakeHubSpot) {
    let server = MockServer::start().await;
    let fake = FakeHubSpot {
        token: token.into(),
        ..FakeHubSpot::default()
    };
    Mock::given(method("POST"))
        .and(path(UPSERT))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    (server, fake)
}

pub(crate) async fn app_with_crm(server: &MockServer, auth: CrmAuth) -> TestApp {
    app_with_crm_and(server, auth, &[]).await
}

async fn app_with_crm_and(server: &MockServer, auth: CrmAuth, extra: &[(&str, &str)]) -> TestApp {
    app_with_crm_keyed(server, auth, None, extra).await
}

/// An app whose tenant's CRM matches contacts by `id_property` (`email` when `None`).
pub(crate) async fn app_with_crm_keyed(
    server: &MockServer,
    auth: CrmAuth,
    id_property: Option<&str>,
    extra: &[(&str, &str)],
) -> TestApp {
    let mut settings = vec![
        ("LEADQ_CRM_SYNC_BACKOFF_BASE_MS", "100"),
        ("LEADQ_CRM_SYNC_BACKOFF_MAX_MS", "300"),
    ];
    settings.extend_from_slice(extra);
    let app = spawn_app_with(&settings).await;
    app.configure(&TenantUpdate {
        crm: Some(CrmSettings {
            base_url: server.uri(),
            auth,
            id_property: id_property.map(Into::into),
            batch_size: None,
        }),
        ..TenantUpdate::default()
    })
    .await;
    app
}

pub(crate) fn token(t: &str) -> CrmAuth {
    CrmAuth::PrivateApp { token: t.into() }
}

pub(crate) fn hot_lead(external_id: &str, email: &str) -> Value {
    let mut l = sample_lead(external_id);
    l["email"] = json!(email);
    l
}

/// (synced_version, failed_version, failure_code, crm_id) of a lead's CRM state.
async fn crm_state(
    app: &TestApp,
    external_id: &str,
) -> Option<(i64, Option<i64>, Option<String>, Option<String>)> {
    sqlx::query_as(
        "select s.synced_version, s.failed_version, s.failure_code, s.crm_id
           from crm_sync_state s join leads l on l.id = s.lead_id
          where l.external_id = $1",
    )
    .bind(external_id)
    .fetch_optional(&mut *app.own().await)
    .await
    .unwrap()
}

pub(crate) async fn wait_synced(app: &TestApp, external_id: &str) -> String {
    wait_for("the lead synced", Duration::from_secs(30), || async {
        crm_state(app, external_id)
            .await
            .filter(|s| s.0 >= 1)
            .map(|s| s.3.unwrap_or_default())
    })
    .await
}

/// (status, attempts, last_error_code) of the lead's latest crm_sync run.
async fn crm_run(app: &TestApp, external_id: &str) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "select r.status, r.attempts, r.last_error_code from job_runs r
          where r.kind = 'crm_sync' and r.message_id like 'crm_sync:' || (
                select id::text from leads where external_id = $1) || ':%'
          order by r.updated_at desc limit 1",
    )
    .bind(external_id)
    .fetch_optional(&mut *app.own().await)
    .await
    .unwrap()
}

/// The lead's crm_sync run once the worker has recorded it as completed (the record is written
/// just after the CRM state, so waiting on the state alone races with it).
pub(crate) async fn completed_run(
    app: &TestApp,
    external_id: &str,
) -> (String, i32, Option<String>) {
    wait_for(
        "the crm_sync run recorded",
        Duration::from_secs(20),
        || async {
            crm_run(app, external_id)
                .await
                .filter(|r| r.0 == "completed")
        },
    )
    .await
}

pub(crate) async fn upserts(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == UPSERT)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qualified_lead_is_upserted_once_and_a_207_fails_only_its_own_record() {
    let (server, fake) = hubspot_accepting("pat-na1-11111111-2222").await;
    let app = app_with_crm(&server, token("pat-na1-11111111-2222")).await;
    let worker = app.spawn_worker().await;

    for (id, email) in [("tg-1", "ada@example.com"), ("tg-2", "invalid@example.com")] {
        assert_eq!(
            app.post_lead(app.key(), &hot_lead(id, email))
                .await
                .status(),
            202
        );
    }
    let crm_id = wait_synced(&app, "tg-1").await;
    assert_eq!(crm_id, fake.contacts.lock().unwrap()["ada@example.com"]);
    let failed = wait_for(
        "the invalid record failed",
        Duration::from_secs(30),
        || async { crm_run(&app, "tg-2").await.filter(|r| r.0 == "dead") },
    )
    .await;
    assert_eq!(failed.2.as_deref(), Some("crm_invalid_data"));
    let state = crm_state(&app, "tg-2").await.unwrap();
    assert_eq!((state.0, state.2.as_deref()), (0, Some("crm_invalid_data")));
    // tg-1 may have been synced in tg-2's batch: its own job then finds it done.
    completed_run(&app, "tg-1").await;

    // What HubSpot received: upserts keyed by email, every value a string.
    let sent = upserts(&server).await;
    let ada = sent
        .iter()
        .flat_map(|b| b["inputs"].as_array().unwrap().clone())
        .find(|i| i["id"] == "ada@example.com")
        .unwrap();
    assert_eq!(ada["idProperty"], "email");
    assert_eq!(ada["properties"]["leadq_score"], "95");
    assert_eq!(ada["properties"]["leadq_tier"], "hot");
    assert_eq!(ada["properties"]["firstname"], "Ada");
    let calls = sent.len();

    // A replayed crm_sync (same lead, same version, e.g. a re-drive) calls nobody; the same
    // lead posted again unchanged asks for no sync at all.
    let lead_id: uuid::Uuid = sqlx::query_scalar("select id from leads where external_id = 'tg-1'")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    app.queue
        .enqueue(vec![leadq_queue::NewJob {
            envelope: leadq_queue::envelope::Envelope {
                schema_version: leadq_queue::envelope::SCHEMA_VERSION,
                message_id: format!("replay-{lead_id}"),
                tenant_id: app.tenant.tenant_id,
                user_id: "system:lead_score".into(),
                action: "crm_sync".into(),
                payload: json!({"lead_id": lead_id, "version": 1}),
                timestamp: chrono::Utc::now(),
                correlation_id: "replay".into(),
                trace_context: Default::default(),
                signature: None,
            },
            run_at: None,
            priority: Default::default(),
        }])
        .await
        .unwrap();
    let mut again = hot_lead("tg-1", "ada@example.com");
    again["message_id"] = json!("resend-1");
    assert_eq!(app.post_lead(app.key(), &again).await.status(), 202);
    wait_for(
        "the replay and the resend ran",
        Duration::from_secs(20),
        || async {
            let done = app.queue.counts("crm_sync").await.unwrap().done;
            let scored = app.queue.counts("lead_score").await.unwrap().done;
            (done >= 2 && scored >= 3).then_some(())
        },
    )
    .await;
    assert_eq!(upserts(&server).await.len(), calls, "no second call");
    assert_eq!(
        fake.contacts.lock().unwrap().len(),
        1,
        "one contact in the CRM"
    );
    let version: i64 = sqlx::query_scalar("select version from leads where external_id = 'tg-1'")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(version, 1, "an unchanged lead gets no new version");

    // Every upsert is in the lead's audit trail: the CRM's object id, or the code it failed
    // with; never the person's data.
    let audited: Vec<(String, String, Value)> = sqlx::query_as(
        "select a.outcome, l.external_id, a.details from audit_log a
           join leads l on a.subject = 'lead:' || l.id
          where a.action = 'crm.upsert' order by a.id",
    )
    .fetch_all(&mut *app.own().await)
    .await
    .unwrap();
    let of = |id: &str| audited.iter().filter(|a| a.1 == id).collect::<Vec<_>>();
    let ada = of("tg-1");
    assert_eq!(ada.len(), 1, "{audited:?}");
    assert_eq!(ada[0].0, "ok");
    assert_eq!(ada[0].2["crm_id"], crm_id.as_str());
    assert_eq!(ada[0].2["crm"], "hubspot");
    let bad = of("tg-2");
    assert_eq!(bad.len(), 1, "{audited:?}");
    assert_eq!(bad[0].0, "crm_invalid_data");
    assert!(bad[0].2["crm_id"].is_null());
    assert!(
        !format!("{audited:?}").contains("example.com"),
        "no personal data"
    );

    worker.stop().await;
    app.stop().await;
}

fn rate_limited(policy: &str) -> ResponseTemplate {
    let message = match policy {
        "DAILY" => "You have reached your daily limit.",
        _ => "You have reached your ten_secondly_rolling limit.",
    };
    ResponseTemplate::new(429)
        .insert_header("retry-after", "1")
        .set_body_json(
            json!({"status": "error", "message": message, "errorType": "RATE_LIMIT",
            "correlationId": "c-429", "policyName": policy, "groupName": "api-calls"}),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_auth_failures_and_server_errors_each_take_their_path() {
    let (server, _) = hubspot_accepting("pat-na1-abc").await;
    let app = app_with_crm(&server, token("pat-na1-abc")).await;
    let worker = app.spawn_worker().await;
    let once = |t: ResponseTemplate| {
        Mock::given(method("POST"))
            .and(path(UPSERT))
            .respond_with(t)
            .with_priority(1)
            .up_to_n_times(1)
    };

    // 429 TEN_SECONDLY_ROLLING: retried after the wait, no attempt used.
    once(rate_limited("TEN_SECONDLY_ROLLING"))
        .mount(&server)
        .await;
    app.post_lead(app.key(), &hot_lead("tg-10", "ten@example.com"))
        .await;
    wait_synced(&app, "tg-10").await;
    let run = completed_run(&app, "tg-10").await;
    assert_eq!((run.0.as_str(), run.1), ("completed", 1), "{run:?}");

    // 500: transient, retried with backoff, an attempt used.
    once(
        ResponseTemplate::new(500).set_body_json(json!({"status": "error",
        "message": "internal error", "correlationId": "c-500", "category": "INTERNAL_ERROR"})),
    )
    .mount(&server)
    .await;
    app.post_lead(app.key(), &hot_lead("tg-11", "five@example.com"))
        .await;
    wait_synced(&app, "tg-11").await;
    let run = completed_run(&app, "tg-11").await;
    assert_eq!((run.0.as_str(), run.1), ("completed", 2), "{run:?}");

    // 401: permanent, dead-lettered at once, alertable.
    once(
        ResponseTemplate::new(401).set_body_json(json!({"status": "error",
        "message": "The OAuth token used to make this call expired", "correlationId": "c-401",
        "category": "EXPIRED_AUTHENTICATION"})),
    )
    .mount(&server)
    .await;
    app.post_lead(app.key(), &hot_lead("tg-12", "four@example.com"))
        .await;
    let run = wait_for("the 401 dead-lettered", Duration::from_secs(20), || async {
        crm_run(&app, "tg-12").await.filter(|r| r.0 == "dead")
    })
    .await;
    assert_eq!((run.1, run.2.as_deref()), (1, Some("crm_unauthorized")));
    let before_daily = upserts(&server).await.len();
    assert_eq!(before_daily, 5, "429+200, 500+200, 401");

    // 429 DAILY: the tenant's syncing pauses until the limit resets; nobody hammers HubSpot,
    // and the job waits (scheduled) instead of failing.
    once(rate_limited("DAILY")).mount(&server).await;
    let asked = chrono::Utc::now();
    app.post_lead(app.key(), &hot_lead("tg-13", "daily@example.com"))
        .await;
    let paused: chrono::DateTime<chrono::Utc> =
        wait_for("the CRM paused", Duration::from_secs(20), || async {
            sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
                "select paused_until from crm_connections",
            )
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap()
        })
        .await;
    // The next midnight after the moment the worker saw the 429, which lies between `asked`
    // and now (a bound that holds in the last minute of a UTC day too).
    let seen = chrono::Utc::now();
    assert!(
        paused > asked && paused <= seen + chrono::TimeDelta::days(1),
        "{paused} is not the next UTC midnight after a moment in {asked}..{seen}"
    );
    assert_eq!(
        paused.time(),
        chrono::NaiveTime::MIN,
        "until the next UTC midnight"
    );
    app.post_lead(app.key(), &hot_lead("tg-14", "later@example.com"))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        upserts(&server).await.len(),
        before_daily + 1,
        "one call, then silence"
    );
    let c = app.queue.counts("crm_sync").await.unwrap();
    assert_eq!((c.scheduled, c.dead), (2, 1), "{c:?}");

    let metrics = app.text(&format!("http://{}/metrics", worker.health)).await;
    for needle in [
        "leadq_crm_requests_total{status=\"401\"}",
        "leadq_crm_rate_limited_total{policy=\"daily\"}",
        "leadq_crm_rate_limited_total{policy=\"ten_secondly_rolling\"}",
        "leadq_crm_request_duration_seconds_count",
        "leadq_tenant_jobs_total{tenant=\"",
    ] {
        assert!(metrics.contains(needle), "{needle} in worker metrics");
    }
    assert!(!metrics.contains("pat-na1-abc"));

    // Failed calls are audited per lead with their code, as the successes are.
    let outcomes: Vec<(String, String)> = sqlx::query_as(
        "select l.external_id, a.outcome from audit_log a
           join leads l on a.subject = 'lead:' || l.id
          where a.action = 'crm.upsert' and l.external_id in ('tg-11', 'tg-12')
          order by a.id",
    )
    .fetch_all(&mut *app.own().await)
    .await
    .unwrap();
    let of = |lead: &str| {
        outcomes
            .iter()
            .filter(|(l, _)| l == lead)
            .map(|(_, o)| o.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(of("tg-11"), ["crm_unavailable", "ok"], "{outcomes:?}");
    // tg-12 stays wanted after the 401 (later batches try it again; the daily limit then
    // stops one): its first attempt is the refused one.
    assert_eq!(
        of("tg-12").first(),
        Some(&"crm_unauthorized"),
        "{outcomes:?}"
    );

    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_are_refreshed_once_and_cached() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/v1/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "bearer", "refresh_token": "rt-2", "access_token": "at-1",
            "expires_in": 1800})))
        .mount(&server)
        .await;
    let fake = FakeHubSpot {
        token: "at-1".into(),
        ..FakeHubSpot::default()
    };
    Mock::given(method("POST"))
        .and(path(UPSERT))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    let app = app_with_crm(
        &server,
        CrmAuth::Oauth {
            client_id: "client-1".into(),
            client_secret: "s3cr3t-client".into(),
            refresh_token: "rt-1".into(),
        },
    )
    .await;
    let worker = app.spawn_worker().await;
    app.post_lead(app.key(), &hot_lead("tg-20", "o1@example.com"))
        .await;
    wait_synced(&app, "tg-20").await;
    app.post_lead(app.key(), &hot_lead("tg-21", "o2@example.com"))
        .await;
    wait_synced(&app, "tg-21").await;

    let requests = server.received_requests().await.unwrap();
    let refreshes: Vec<String> = requests
        .iter()
        .filter(|r| r.url.path() == "/oauth/v1/token")
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    assert_eq!(refreshes.len(), 1, "one refresh, then the cached token");
    assert!(refreshes[0].contains("grant_type=refresh_token"));
    assert!(refreshes[0].contains("refresh_token=rt-1"));
    assert_eq!(fake.contacts.lock().unwrap().len(), 2);
    // The cached token and the rotated refresh token are sealed at rest.
    let (creds, access): (String, Option<String>) =
        sqlx::query_as("select credentials, access_token from crm_connections")
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
    for secret in ["rt-2", "s3cr3t-client", "at-1"] {
        assert!(!creds.contains(secret) && !access.as_deref().unwrap_or("").contains(secret));
    }
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_crm_sync_is_asked_for_again_by_the_reconcile_schedule() {
    let (server, _) = hubspot_accepting("pat-na1-33333333-4444").await;
    let app = app_with_crm_and(
        &server,
        token("pat-na1-33333333-4444"),
        &[("LEADQ_SCHEDULE_CRM_RECONCILE", "* * * * * *")],
    )
    .await;
    let tenant = app.tenant.tenant_id;
    // Hold the tenant's crm_sync jobs, so the one the lead asks for can be lost.
    app.queue.pause_tenant("crm_sync", tenant).await.unwrap();
    let worker = app.spawn_worker().await;
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-lost", "lost@example.com"))
            .await
            .status(),
        202
    );
    wait_for("the sync held", Duration::from_secs(20), || async {
        let st = app.queue.tenant_state("crm_sync", tenant).await.unwrap();
        (st.held == 1).then_some(())
    })
    .await;
    // Lose it, as a Redis that lost its last second of writes would.
    let (removed, _) = app
        .queue
        .erase_where("crm_sync", |e| e.tenant_id == tenant)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    app.queue.resume_tenant("crm_sync", tenant).await.unwrap();
    // A wanted sync is only taken as lost once it is 10 minutes old.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(upserts(&server).await.is_empty(), "reconciled a fresh sync");
    let mut tx = app.own().await;
    sqlx::query("update crm_sync_state set updated_at = now() - interval '20 minutes'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    wait_synced(&app, "tg-lost").await;
    let sent = upserts(&server).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    // The sync's run, once its outcome is recorded (`settled_runs` waits for it).
    let reconciled = |by: &[(String, String)]| {
        by.iter()
            .any(|(m, s)| m.starts_with("crm_reconcile:") && s == "completed")
    };
    let by = app.settled_runs("kind = $1", "crm_sync", reconciled).await;
    assert!(reconciled(&by), "{by:?}");
    worker.stop().await;
    app.stop().await;
}

/// How old a pending CRM row of [`pending_rows`] is.
#[derive(Clone, Copy, PartialEq)]
enum Pending {
    /// Wanted just now.
    Fresh,
    /// Wanted 20 minutes ago and never touched since: lost, for the reconcile schedule.
    Stale,
    /// Failed for good at the wanted version a day ago (HubSpot refused its data).
    Failed,
}

/// Adds `n` pending CRM rows to the test tenant (leads `<prefix>-<i>`, version 1 wanted), as
/// old as `age` says. (Inserted as they are, never updated: an update would read the table on
/// the owner's connection, whose counters may reach the statistics at any moment and be
/// counted as the claim's reads.)
async fn pending_rows(app: &TestApp, prefix: &str, n: i32, age: Pending) -> Vec<uuid::Uuid> {
    let tenant = app.tenant.tenant_id;
    let mut tx = app.db.owner_tx(tenant).await;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "insert into leads (tenant_id, external_id, source)
         select $1, $2 || '-' || i, 'telegram' from generate_series(1, $3) as i
         returning id",
    )
    .bind(tenant)
    .bind(prefix)
    .bind(n)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let (failed, secs_ago) = match age {
        Pending::Fresh => (false, 0.0),
        Pending::Stale => (false, 1200.0),
        Pending::Failed => (true, 86400.0),
    };
    sqlx::query(
        "insert into crm_sync_state (tenant_id, lead_id, wanted_version, failed_version,
                                     failure_code, updated_at)
         select $1, id, 1, case when $3 then 1 end, case when $3 then 'crm_invalid_data' end,
                now() - make_interval(secs => $4)
           from unnest($2::uuid[]) as id",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(failed)
    .bind(secs_ago)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    ids
}

/// Refreshes the table's statistics, as autovacuum's `ANALYZE` would once a backlog built up
/// (which also drops the plans connections kept).
async fn analyze_crm_rows(app: &TestApp) {
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
    sqlx::query("analyze crm_sync_state")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// The reconcile schedule asks, for every tenant on every firing, for the oldest wanted sync
/// nobody touched for ten minutes. After a HubSpot outage that is a tenant's whole backlog, and
/// the read must still take its one row, not read and sort the backlog to find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_reads_a_tenants_oldest_lost_sync_not_its_backlog() {
    use leadq_jobs::ops::maintenance::crm_reconcile;
    let app = leadq_testkit::spawn_app().await;
    // One connection: a reusable plan is per connection, and so are the counters' flushes.
    let pool = crate::lead_store::one_connection(&app).await;
    // Firings while the tenant has a few lost syncs make the plan.
    pending_rows(&app, "few", 8, Pending::Stale).await;
    for firing in 1..=6 {
        assert_eq!(crm_reconcile(&pool, &app.queue, firing).await.unwrap(), 1);
    }
    pending_rows(&app, "backlog", 3000, Pending::Stale).await;
    pending_rows(&app, "failed", 2000, Pending::Failed).await;
    analyze_crm_rows(&app).await;
    let before = crate::lead_store::rows_read(&pool, "crm_sync_state").await;
    assert_eq!(crm_reconcile(&pool, &app.queue, 7).await.unwrap(), 1);
    let rows = crate::lead_store::rows_read(&pool, "crm_sync_state").await - before;
    assert!(
        rows <= 20,
        "the reconcile read {rows} rows of crm_sync_state for one: the tenant's 3,008 lost \
         syncs, or its 2,000 failed ones, were read"
    );
    pool.close().await;
    app.stop().await;
}

/// A suspended tenant's lost syncs, or those of a tenant whose `crm_sync` is disabled, are not
/// asked for: the worker would refuse the job (an `unauthorized` dead letter every firing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_leaves_a_suspended_or_unentitled_tenant_alone() {
    use leadq_jobs::ops::maintenance::crm_reconcile;
    let app = leadq_testkit::spawn_app().await;
    pending_rows(&app, "lost", 2, Pending::Stale).await;
    let (pool, slug) = (&app.db.pool, &app.tenant.slug);
    let status = |s: &'static str| async move {
        sqlx::query("update tenants set status = $2 where id = $1")
            .bind(app.tenant.tenant_id)
            .bind(s)
            .execute(pool)
            .await
            .unwrap();
    };
    status("suspended").await;
    assert_eq!(crm_reconcile(pool, &app.queue, 1).await.unwrap(), 0);
    status("active").await;
    leadq_platform::tenant::set_kind_mode(pool, "operator:t", slug, "crm_sync", "disabled")
        .await
        .unwrap();
    assert_eq!(crm_reconcile(pool, &app.queue, 2).await.unwrap(), 0);
    leadq_platform::tenant::set_kind_mode(pool, "operator:t", slug, "crm_sync", "enabled")
        .await
        .unwrap();
    assert_eq!(crm_reconcile(pool, &app.queue, 3).await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_its_batch_not_the_tenants_backlog() {
    use leadq_jobs::integrations::hubspot::claim;
    use leadq_platform::db::{self, Scope};
    let app = leadq_testkit::spawn_app().await;
    let tenant = app.tenant.tenant_id;
    // One connection: a reusable plan is per connection, and so are the counters' flushes.
    let pool = crate::lead_store::one_connection(&app).await;
    let by = uuid::Uuid::new_v4();
    // Claims while the tenant has a few pending rows make the plan (rolled back: nothing held).
    let few = pending_rows(&app, "few", 8, Pending::Fresh).await;
    for lead in &few {
        let mut tx = db::begin(&pool, Scope::Tenant(tenant)).await.unwrap();
        let got = claim(&mut tx, tenant, *lead, 10, by).await.unwrap();
        assert_eq!(got.len(), 8);
        tx.rollback().await.unwrap();
    }
    // A backlog builds up, as after a HubSpot outage, and autovacuum's ANALYZE sees it (which
    // also drops the connection's kept plan). With statistics that still say "a few rows", any
    // plan sorts what little it expects; with these, the claim reads about its batch, where the
    // statement that ordered by "is it the job's own lead" read every pending row whatever
    // the statistics (3,018 rows here, before the failed rows were added).
    let backlog = pending_rows(&app, "backlog", 3000, Pending::Fresh).await;
    // And leads that failed for good a day ago (HubSpot refused their data): they wait for a
    // new version, older than any pending row, and a claim must not read through them either.
    pending_rows(&app, "failed", 2000, Pending::Failed).await;
    analyze_crm_rows(&app).await;
    let lead = backlog[2500];
    let before = crate::lead_store::rows_read(&pool, "crm_sync_state").await;
    let mut tx = db::begin(&pool, Scope::Tenant(tenant)).await.unwrap();
    let got = claim(&mut tx, tenant, lead, 10, by).await.unwrap();
    tx.commit().await.unwrap();
    let rows = crate::lead_store::rows_read(&pool, "crm_sync_state").await - before;
    let ids: Vec<uuid::Uuid> = got.iter().map(|l| l.id()).collect();
    assert_eq!(ids.len(), 10, "{ids:?}");
    assert!(
        ids.contains(&lead),
        "the job's own lead was not claimed: {ids:?}"
    );
    assert!(
        rows <= 40,
        "a claim of 10 read {rows} rows of crm_sync_state: the tenant's 3,008 pending rows, \
         or its 2,000 failed ones, were read"
    );
    // The rest are the oldest pending rows, and a second claim takes the next ones, not these.
    assert!(
        few.iter().filter(|id| ids.contains(id)).count() == 8,
        "{ids:?}"
    );
    let mut tx = db::begin(&pool, Scope::Tenant(tenant)).await.unwrap();
    let own = *backlog.iter().find(|id| !ids.contains(id)).unwrap();
    let next = claim(&mut tx, tenant, own, 10, by).await.unwrap();
    tx.commit().await.unwrap();
    assert!(next.iter().all(|l| !ids.contains(&l.id())), "claimed twice");
    assert_eq!(next.len(), 10);
    assert!(next.iter().any(|l| l.id() == own));
    pool.close().await;
    app.stop().await;
}
