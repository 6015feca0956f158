//! Chatwoot and Telegram webhooks against their contracts (`docs/contracts/`): signature and
//! secret checks, bad bodies, deduplication, and what each event does to a lead.

use std::time::Duration;

use chrono::Utc;
use leadq_jobs::integrations::chatwoot;
use leadq_jobs::integrations::settings::TenantUpdate;
use leadq_platform::secret::Secret;
use leadq_testkit::{spawn_app_with, wait_for, TestApp};
use serde_json::{json, Value};

pub(crate) const SECRET: &str = "pL7xQ2mZ9vB4nK8sD3fG6hJ1";
pub(crate) const ACCOUNT: i64 = 7;
const TG_TOKEN: &str = "tg_Secret-token_42";

pub(crate) async fn configured_app() -> TestApp {
    configured_app_with(&[]).await
}

/// [`configured_app`] with setting overrides.
pub(crate) async fn configured_app_with(extra: &[(&str, &str)]) -> TestApp {
    let app = spawn_app_with(extra).await;
    app.configure(&TenantUpdate {
        chatwoot_account_id: Some(ACCOUNT),
        chatwoot_secret: Some(Secret::new(SECRET)),
        telegram_secret: Some(Secret::new(TG_TOKEN)),
        ..TenantUpdate::default()
    })
    .await;
    app
}

fn chatwoot_path(app: &TestApp) -> String {
    format!("/v1/webhooks/chatwoot/{}", app.tenant.slug)
}

fn telegram_path(app: &TestApp) -> String {
    format!("/v1/webhooks/telegram/{}", app.tenant.slug)
}

/// Headers as Chatwoot sends them, signed with `secret` at `ts`.
fn signed(secret: &str, ts: i64, body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-chatwoot-delivery", delivery.to_owned()),
        ("x-chatwoot-timestamp", ts.to_string()),
        (
            "x-chatwoot-signature",
            chatwoot::sign(secret.as_bytes(), ts, body),
        ),
    ]
}

pub(crate) async fn post_chatwoot(app: &TestApp, body: &[u8], delivery: &str) -> reqwest::Response {
    let headers = signed(SECRET, Utc::now().timestamp(), body, delivery);
    app.post_raw(&chatwoot_path(app), &headers, body.to_vec())
        .await
}

/// A `message_created` body in Chatwoot's own encoding: compact JSON with `<`, `>` and `&`
/// escaped as `\u003c`, `\u003e`, `\u0026`.
pub(crate) fn message_body(
    account: i64,
    message_id: i64,
    private: bool,
    message_type: &str,
) -> Vec<u8> {
    let body = json!({
        "account": {"id": account, "name": "Acme"},
        "additional_attributes": {},
        "content_attributes": {},
        "content_type": "text",
        "content": "Hello <team> & thanks, we need a CRM",
        "conversation": {
            "additional_attributes": {}, "can_reply": true, "channel": "Channel::WebWidget",
            "contact_inbox": {"id": 5, "contact_id": 42, "inbox_id": 1, "source_id": "s",
                              "pubsub_token": "do-not-log-me"},
            "id": 3, "inbox_id": 1, "messages": [], "labels": [],
            "meta": {"sender": {"additional_attributes": {}, "custom_attributes": {},
                                "email": "ada@example.com", "id": 42, "identifier": null,
                                "name": "Ada Lovelace", "phone_number": "+447700900123",
                                "thumbnail": "", "blocked": false, "type": "contact"},
                     "assignee": null, "assignee_type": null, "team": null, "hmac_verified": false},
            "status": "open", "custom_attributes": {}, "snoozed_until": null, "unread_count": 1,
            "timestamp": 1_781_690_400, "created_at": 1_781_690_400,
            "updated_at": 1_781_690_400.123_456, "account": {"id": account, "name": "Acme"}
        },
        "created_at": "2026-06-17T10:00:00.000Z",
        "id": message_id,
        "inbox": {"id": 1, "name": "Website"},
        "message_type": message_type,
        "private": private,
        "sender": {"account": {"id": account, "name": "Acme"}, "additional_attributes": {},
                   "avatar": "", "custom_attributes": {}, "email": "ada@example.com", "id": 42,
                   "identifier": null, "name": "Ada Lovelace", "phone_number": "+447700900123",
                   "thumbnail": "", "blocked": false},
        "source_id": null,
        "event": "message_created"
    });
    let raw = serde_json::to_string(&body)
        .unwrap()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    assert!(raw.contains("\\u003cteam\\u003e \\u0026"));
    raw.into_bytes()
}

pub(crate) fn conversation_body(event: &str, status: &str, updated_at: f64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "additional_attributes": {}, "can_reply": true, "channel": "Channel::Api",
        "id": 3, "inbox_id": 1, "messages": [], "labels": [],
        "meta": {"sender": {"email": "ada@example.com", "id": 42, "name": "Ada Lovelace",
                            "phone_number": null, "type": "contact"}},
        "status": status, "timestamp": 1_781_690_400, "created_at": 1_781_690_400,
        "updated_at": updated_at, "account": {"id": ACCOUNT, "name": "Acme"},
        "changed_attributes": null,
        "event": event
    }))
    .unwrap()
}

async fn pending(app: &TestApp, kind: &str) -> u64 {
    app.queue.counts(kind).await.unwrap().pending
}

async fn error_code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatwoot_signatures_timestamps_accounts_and_duplicates_take_their_exact_path() {
    let app = configured_app().await;
    let path = chatwoot_path(&app);
    let body = message_body(ACCOUNT, 901, false, "incoming");
    let now = Utc::now().timestamp();

    // Valid, over the raw escaped bytes.
    let res = post_chatwoot(&app, &body, "d-1").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "accepted");
    assert_eq!(pending(&app, "chatwoot_event").await, 1);

    // Missing signature, missing timestamp, wrong secret, the body signed without the
    // timestamp prefix, stale and future timestamps: 401, nothing enqueued.
    let mut bare = hmac_sha256(SECRET, &body);
    bare.insert_str(0, "sha256=");
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no signature",
            vec![("x-chatwoot-timestamp", now.to_string())],
            "bad_signature",
        ),
        (
            "no timestamp",
            vec![(
                "x-chatwoot-signature",
                chatwoot::sign(SECRET.as_bytes(), now, &body),
            )],
            "bad_signature",
        ),
        (
            "wrong secret",
            signed("another-secret", now, &body, "d-2"),
            "bad_signature",
        ),
        (
            "body without the timestamp prefix",
            vec![
                ("x-chatwoot-timestamp", now.to_string()),
                ("x-chatwoot-signature", bare),
            ],
            "bad_signature",
        ),
        (
            "stale",
            signed(SECRET, now - 400, &body, "d-3"),
            "stale_timestamp",
        ),
        (
            "future",
            signed(SECRET, now + 400, &body, "d-4"),
            "stale_timestamp",
        ),
    ];
    for (what, headers, code) in cases {
        let res = app.post_raw(&path, &headers, body.clone()).await;
        assert_eq!(error_code(res).await, (401, code.to_owned()), "{what}");
    }
    assert_eq!(pending(&app, "chatwoot_event").await, 1);

    // Another account's body with a valid signature (this tenant's secret): refused.
    let foreign = message_body(99, 902, false, "incoming");
    let res = post_chatwoot(&app, &foreign, "d-5").await;
    assert_eq!(error_code(res).await, (403, "wrong_account".to_owned()));

    // The same delivery again, and the same event under a new delivery id (a second
    // subscribed webhook): 2xx, nothing enqueued.
    for delivery in ["d-1", "d-6"] {
        let res = post_chatwoot(&app, &body, delivery).await;
        assert_eq!(res.status(), 200, "{delivery}");
        assert_eq!(res.json::<Value>().await.unwrap()["status"], "duplicate");
    }
    assert_eq!(pending(&app, "chatwoot_event").await, 1);

    // Event types we do not handle, and private notes: 2xx, counted, not enqueued.
    let typing = serde_json::to_vec(&json!({"event": "conversation_typing_on",
        "account": {"id": ACCOUNT}, "is_private": false}))
    .unwrap();
    let note = message_body(ACCOUNT, 903, true, "outgoing");
    for b in [typing, note] {
        let res = post_chatwoot(&app, &b, &uuid::Uuid::new_v4().to_string()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap()["status"], "ignored");
    }
    assert_eq!(pending(&app, "chatwoot_event").await, 1);

    // Another tenant's endpoint knows nothing of this secret.
    let other = app.other_tenant().await;
    let res = app
        .post_raw(
            &format!("/v1/webhooks/chatwoot/{}", other.slug),
            &signed(SECRET, now, &body, "d-7"),
            body.clone(),
        )
        .await;
    assert_eq!(res.status(), 404);

    let metrics = app.text(&format!("{}/metrics", app.address)).await;
    for (outcome, n) in [
        ("accepted", 1),
        ("bad_signature", 4),
        ("stale", 2),
        ("wrong_account", 1),
        ("duplicate", 2),
        ("ignored", 2),
    ] {
        let line =
            format!("leadq_webhook_requests_total{{source=\"chatwoot\",outcome=\"{outcome}\"}}");
        let got: f64 = metrics
            .lines()
            .find(|l| l.starts_with(&line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0);
        // The recorder is process-wide (tests run in parallel): at least ours.
        assert!(got >= n as f64, "{outcome}: {got}");
    }
    assert!(!metrics.contains(SECRET));
    app.stop().await;
}

fn hmac_sha256(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_a_4xx_code_and_leave_nothing_behind() {
    let app = configured_app().await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "truncated",
            br#"{"event":"message_created","id":9"#.to_vec(),
            400,
            "malformed_json",
        ),
        (
            "invalid utf-8",
            b"{\"event\":\"message_created\",\"content\":\"\xff\xfe\"}".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "event of the wrong type",
            br#"{"event":5,"id":1}"#.to_vec(),
            422,
            "invalid_field",
        ),
        (
            "id of the wrong type",
            serde_json::to_vec(&json!({"event": "contact_created", "id": {"x": 1},
                "account": {"id": ACCOUNT}}))
            .unwrap(),
            422,
            "invalid_field",
        ),
        ("not an object", b"[]".to_vec(), 422, "invalid_body"),
    ];
    for (what, body, status, code) in cases {
        let res = post_chatwoot(&app, &body, &uuid::Uuid::new_v4().to_string()).await;
        assert_eq!(error_code(res).await, (status, code.to_owned()), "{what}");
    }
    // Over the 3 MB cap: 413 before any verification.
    let big = vec![b' '; chatwoot::MAX_BODY_BYTES + 1];
    let res = post_chatwoot(&app, &big, "d-big").await;
    assert_eq!(error_code(res).await, (413, "payload_too_large".to_owned()));
    // Telegram: the same rules, its own secret.
    let tg = |body: Vec<u8>| {
        let app = &app;
        async move {
            app.post_raw(
                &telegram_path(app),
                &[("x-telegram-bot-api-secret-token", TG_TOKEN.to_owned())],
                body,
            )
            .await
        }
    };
    assert_eq!(
        error_code(tg(b"{\"update_id\": 1, \"mess".to_vec()).await).await,
        (400, "malformed_json".into())
    );
    assert_eq!(
        error_code(tg(br#"{"update_id": "1"}"#.to_vec()).await).await,
        (422, "invalid_body".into())
    );
    assert_eq!(
        error_code(tg(b"\xc3\x28".to_vec()).await).await,
        (400, "malformed_json".into())
    );

    assert_eq!(pending(&app, "chatwoot_event").await, 0);
    assert_eq!(pending(&app, "lead_score").await, 0);
    let leads: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(leads, 0);
    app.stop().await;
}

async fn lead(app: &TestApp, external_id: &str) -> Value {
    let res = app
        .get(&format!("/v1/leads/{external_id}"), app.key())
        .await;
    if res.status() == 404 {
        return Value::Null;
    }
    res.json().await.unwrap()
}

async fn wait_lead<F: Fn(&Value) -> bool>(app: &TestApp, id: &str, what: &str, ok: F) -> Value {
    wait_for(what, Duration::from_secs(20), || async {
        let l = lead(app, id).await;
        ok(&l).then_some(l)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_chatwoot_event_drives_its_lead_change() {
    let app = configured_app().await;
    let worker = app.spawn_worker().await;
    let id = "cw-7-42";

    // contact_created: the lead's contact fields.
    let contact = serde_json::to_vec(&json!({"account": {"id": ACCOUNT, "name": "Acme"},
        "additional_attributes": {}, "avatar": "", "custom_attributes": {},
        "email": "ada@example.com", "id": 42, "identifier": null, "name": "Ada Lovelace",
        "phone_number": null, "thumbnail": "", "blocked": false, "event": "contact_created"}))
    .unwrap();
    assert_eq!(post_chatwoot(&app, &contact, "c-1").await.status(), 200);
    let l = wait_lead(&app, id, "the contact's lead", |l| {
        l["email"] == "ada@example.com"
    })
    .await;
    assert_eq!(l["name"], "Ada Lovelace");
    assert_eq!(l["source"], "chatwoot");
    let score_before = l["score"].as_i64().unwrap();

    // An incoming message: attached, and the lead re-scored (chat engagement).
    assert_eq!(
        post_chatwoot(&app, &message_body(ACCOUNT, 901, false, "incoming"), "m-1")
            .await
            .status(),
        200
    );
    let l = wait_lead(&app, id, "the re-scored lead", |l| {
        l["score"].as_i64().unwrap_or(0) > score_before
    })
    .await;
    let engagement = l["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "engagement")
        .unwrap()
        .clone();
    assert_eq!(engagement["detail"], "wrote in chat");
    let (n, content): (i64, Option<String>) = sqlx::query_as(
        "select count(*), max(content) from lead_messages where source = 'chatwoot'",
    )
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap();
    let content = content.map(|c| {
        app.sealer()
            .open(app.tenant.tenant_id, "content", &c)
            .unwrap()
    });
    assert_eq!(
        (n, content.as_deref()),
        (1, Some("Hello <team> & thanks, we need a CRM"))
    );

    // conversation_created, then a status change: newest state wins, an older one arriving
    // late does not undo it.
    let t0 = 1_781_690_400.5;
    for (event, status, at, delivery) in [
        ("conversation_created", "open", t0, "v-1"),
        ("conversation_status_changed", "resolved", t0 + 60.0, "v-2"),
        ("conversation_status_changed", "pending", t0 + 30.0, "v-3"),
    ] {
        let res = post_chatwoot(&app, &conversation_body(event, status, at), delivery).await;
        assert_eq!(res.status(), 200, "{event}");
    }
    wait_for(
        "three conversation events",
        Duration::from_secs(20),
        || async { (app.queue.counts("chatwoot_event").await.unwrap().done >= 5).then_some(()) },
    )
    .await;
    let l = lead(&app, id).await;
    assert_eq!(l["conversation_status"], "resolved");

    // contact_updated: new phone, new version, history kept.
    let updated = serde_json::to_vec(&json!({"account": {"id": ACCOUNT}, "email": "ada@example.com",
        "id": 42, "name": "Ada King", "phone_number": "+447700900123",
        "changed_attributes": [{"name": {"previous_value": "Ada Lovelace", "current_value": "Ada King"}}],
        "event": "contact_updated"}))
    .unwrap();
    assert_eq!(post_chatwoot(&app, &updated, "u-1").await.status(), 200);
    let l = wait_lead(&app, id, "the updated contact", |l| l["name"] == "Ada King").await;
    assert_eq!(l["phone"], "+447700900123");
    let history: i64 = sqlx::query_scalar("select count(*) from lead_scores")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(
        history,
        l["version"].as_i64().unwrap(),
        "one score row per version"
    );

    // Personal data never sat in Redis in clear.
    let dump = redis_dump(&app).await;
    assert!(!dump.contains("ada@example.com") && !dump.contains("we need a CRM"));
    assert!(!dump.contains("do-not-log-me"), "pubsub_token is not kept");

    worker.stop().await;
    app.stop().await;
}

/// Every value under the app's queue prefix, as one string.
async fn redis_dump(app: &TestApp) -> String {
    let mut conn = crate::redis_conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}:*", app.settings.queue.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = String::new();
    for k in keys {
        let t: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        if t == "hash" {
            let v: Vec<String> = redis::cmd("HVALS")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .unwrap();
            out.push_str(&v.join("\n"));
        }
    }
    out
}

async fn post_update(app: &TestApp, update: Value, token: &str) -> reqwest::Response {
    app.post_raw(
        &telegram_path(app),
        &[("x-telegram-bot-api-secret-token", token.to_owned())],
        serde_json::to_vec(&update).unwrap(),
    )
    .await
}

fn tg_message(update_id: i64, extra: Value) -> Value {
    let mut m = json!({"message_id": update_id, "date": 1_780_000_000,
        "from": {"id": 4_503_599_627_370_495_i64, "is_bot": false, "first_name": "Ada",
                 "last_name": "Lovelace", "username": "ada", "language_code": "en"},
        "chat": {"id": 4_503_599_627_370_495_i64, "first_name": "Ada", "type": "private"}});
    m.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"update_id": update_id, "message": m})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_telegram_update_kind_drives_its_lead_change() {
    let app = configured_app().await;
    let worker = app.spawn_worker().await;
    let id = "tg-4503599627370495";

    // The secret token: missing or wrong → 401, nothing enqueued.
    let start = tg_message(
        100,
        json!({"text": "/start spring_promo",
        "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}),
    );
    assert_eq!(
        error_code(post_update(&app, start.clone(), "wrong").await).await,
        (401, "bad_signature".into())
    );
    let res = app
        .post_raw(
            &telegram_path(&app),
            &[],
            serde_json::to_vec(&start).unwrap(),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(pending(&app, "lead_score").await, 0);

    // /start <payload>: the campaign.
    assert_eq!(
        post_update(&app, start.clone(), TG_TOKEN).await.status(),
        200
    );
    let l = wait_lead(&app, id, "the lead from /start", |l| !l.is_null()).await;
    assert_eq!(l["campaign"], "spring_promo");
    assert_eq!(l["name"], "Ada Lovelace");
    // The same update again (Telegram retried): duplicate, nothing new.
    let res = post_update(&app, start, TG_TOKEN).await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "duplicate");

    // A text answer fills the next open question (budget); an inline-keyboard answer its own.
    post_update(
        &app,
        tg_message(101, json!({"text": "around 20k"})),
        TG_TOKEN,
    )
    .await;
    let res = post_update(&app, json!({"update_id": 102, "callback_query": {
        "id": "4382bfdwdsb323b2d9", "chat_instance": "-539582311",
        "from": {"id": 4_503_599_627_370_495_i64, "is_bot": false, "first_name": "Ada"},
        "message": {"message_id": 7, "date": 0, "chat": {"id": 4_503_599_627_370_495_i64, "type": "private"}},
        "data": "timeline=this_month"}}), TG_TOKEN).await;
    let reply: Value = res.json().await.unwrap();
    assert_eq!(reply["method"], "answerCallbackQuery");
    assert_eq!(reply["callback_query_id"], "4382bfdwdsb323b2d9");
    let l = wait_lead(&app, id, "both answers", |l| {
        l["answers"]["budget"] == "around 20k" && l["answers"]["timeline"] == "this_month"
    })
    .await;
    assert_eq!(l["campaign"], "spring_promo");

    // A text with an email entity (UTF-16 offsets past an emoji) fills the email.
    let text = "We ship 🚚 every week. Please reply to my mail: ada@example.com";
    post_update(
        &app,
        tg_message(
            103,
            json!({"text": text,
        "entities": [{"type": "email", "offset": 48, "length": 15}]}),
        ),
        TG_TOKEN,
    )
    .await;
    // A shared contact that is the user's own fills the phone; somebody else's is ignored.
    let theirs = post_update(
        &app,
        tg_message(
            104,
            json!({"contact": {"phone_number": "447700900999",
        "first_name": "Bob", "user_id": 12}}),
        ),
        TG_TOKEN,
    )
    .await;
    assert_eq!(theirs.json::<Value>().await.unwrap()["status"], "ignored");
    post_update(
        &app,
        tg_message(
            105,
            json!({"contact": {"phone_number": "447700900123",
        "first_name": "Ada", "user_id": 4_503_599_627_370_495_i64}}),
        ),
        TG_TOKEN,
    )
    .await;
    let l = wait_lead(&app, id, "email and phone", |l| {
        l["email"] == "ada@example.com" && l["phone"] == "+447700900123"
    })
    .await;
    assert_eq!(
        l["answers"].as_object().unwrap().len(),
        2,
        "no answer was made of the email"
    );

    // Unknown update kinds: 200, ignored.
    let res = post_update(
        &app,
        json!({"update_id": 106, "message_reaction": {"chat": {"id": 1},
        "message_id": 1, "date": 1, "old_reaction": [], "new_reaction": []}}),
        TG_TOKEN,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ignored");

    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_signed_chatwoot_webhooks_are_all_accepted_and_run() {
    const N: i64 = 1000;
    let app = configured_app().await;
    let worker = app.spawn_worker().await;
    let app = std::sync::Arc::new(app);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..N {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let body = serde_json::to_vec(&json!({"account": {"id": ACCOUNT}, "id": 10_000 + i,
                "name": format!("Lead {i}"), "email": format!("lead{i}@example.com"),
                "event": "contact_created"}))
            .unwrap();
            let t = std::time::Instant::now();
            let res = post_chatwoot(&app, &body, &format!("load-{i}")).await;
            (res.status().as_u16(), t.elapsed())
        }));
    }
    let mut latencies = Vec::new();
    let mut accepted = 0;
    let mut refused = std::collections::BTreeMap::<u16, usize>::new();
    for t in tasks {
        let (status, d) = t.await.unwrap();
        accepted += i64::from(status == 200);
        if status != 200 {
            *refused.entry(status).or_default() += 1;
        }
        latencies.push(d);
    }
    let wall = started.elapsed();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    assert_eq!(
        accepted, N,
        "answers other than 200, by status: {refused:?}"
    );
    wait_for("every event applied", Duration::from_secs(120), || async {
        (app.queue.counts("chatwoot_event").await.unwrap().done == N as u64).then_some(())
    })
    .await;
    let leads: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(leads, N);
    // Contact changes go through the lead group commit: one audit row each, in fewer
    // transactions than events (each took a transaction of its own before).
    crate::lead_store::assert_grouped_and_verified(&app, "chatwoot.event", N).await;
    // A measurement for the record, not an assertion (timing belongs in benchmarks).
    println!(
        "webhook load: {N} sent concurrently, {accepted} accepted, {leads} jobs ran; \
         response p50 {:?} p99 {:?} max {:?}; all sent in {wall:?}",
        p(0.50),
        p(0.99),
        latencies[latencies.len() - 1]
    );
    worker.stop().await;
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("the app is still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_update_reads_secrets_from_stdin_or_files_and_the_endpoint_uses_them() {
    use std::io::Write;
    use std::process::Stdio;
    let app = spawn_app_with(&[]).await;
    // Not configured yet: the endpoint does not exist for this tenant.
    let body = message_body(ACCOUNT, 1, false, "incoming");
    assert_eq!(post_chatwoot(&app, &body, "x-1").await.status(), 404);

    let mut child = crate::leadq_cmd(&app)
        .args([
            "tenant",
            "update",
            &app.tenant.slug,
            "--chatwoot-account-id",
            "7",
        ])
        .args(["--chatwoot-secret-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{SECRET}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["changed"],
        json!(["chatwoot_account_id", "chatwoot_secret"])
    );
    let stored: String = sqlx::query_scalar("select chatwoot_secret from tenant_integrations")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert!(!stored.contains(SECRET), "sealed at rest");
    assert_eq!(post_chatwoot(&app, &body, "x-2").await.status(), 200);

    // Invalid settings: every problem in one message, exit 2, nothing changed.
    let dir = std::env::temp_dir().join(format!("leadq-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "pat-na1-xyz\n").unwrap();
    let tg = dir.join("tg");
    std::fs::write(&tg, "not a valid token!").unwrap();
    let out = crate::leadq_cmd(&app)
        .args([
            "tenant",
            "update",
            &app.tenant.slug,
            "--crm-base-url",
            "ftp://crm",
        ])
        .arg("--crm-token-file")
        .arg(&token)
        .args(["--weight", "astrology=5", "--telegram-secret-file"])
        .arg(&tg)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("invalid_request:"), "{err}");
    for problem in ["crm base url", "unknown rule", "telegram secret token"] {
        assert!(err.contains(problem), "{problem} in {err}");
    }
    assert!(!err.contains("pat-na1-xyz"));
    let crm: i64 = sqlx::query_scalar("select count(*) from crm_connections")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(crm, 0);
    app.stop().await;
}
