//! The edge: per-address lockout after failed authentications (429 with `Retry-After`,
//! counted), the limit on requests without credentials, the webhook budget (over it: accepted
//! and enqueued at low priority, counted), and `/metrics` behind a token or on its own address.

use leadq_testkit::{spawn_app_with, TestApp};
use serde_json::Value;

use crate::webhooks::{configured_app_with, message_body, post_chatwoot, ACCOUNT, SECRET};

/// `GET path` with `key`, from `addr` as a trusted proxy reports it.
async fn get_from(app: &TestApp, addr: &str, path: &str, key: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .header("x-forwarded-for", format!("10.9.9.9, {addr}"))
        .send()
        .await
        .unwrap()
}

async fn code(res: reqwest::Response) -> (u16, Option<String>, String) {
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = res.json().await.unwrap_or_default();
    (
        status,
        retry,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_failing_authentication_is_locked_out_and_others_are_not() {
    let app = spawn_app_with(&[
        ("LEADQ_TRUST_FORWARDED_FOR", "true"),
        ("LEADQ_AUTH_FAILURE_LIMIT", "5"),
        ("LEADQ_AUTH_LOCKOUT_SECS", "120"),
    ])
    .await;
    let metrics_url = format!("{}/metrics", app.address);
    let series = "leadq_edge_refusals_total{reason=\"auth_lockout\"}";
    let before = counter(&app.text(&metrics_url).await, series);
    let (attacker, bystander) = ("203.0.113.7", "198.51.100.1");
    for _ in 0..5 {
        let (status, _, c) = code(get_from(&app, attacker, "/v1/leads/x", "wrong").await).await;
        assert_eq!((status, c.as_str()), (401, "invalid_api_key"));
    }
    // Locked out: even the right key, from that address, for the lockout's length.
    let (status, retry, c) = code(get_from(&app, attacker, "/v1/leads/x", app.key()).await).await;
    assert_eq!((status, c.as_str()), (429, "auth_locked_out"));
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");
    // Another address is untouched.
    let res = get_from(&app, bystander, "/v1/leads/x", app.key()).await;
    assert_eq!(res.status(), 404, "the bystander reaches the route");
    let after = counter(&app.text(&metrics_url).await, series);
    assert!(after >= before + 1.0, "{before} -> {after}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_credentials_are_limited_per_address() {
    let app = spawn_app_with(&[
        ("LEADQ_TRUST_FORWARDED_FOR", "true"),
        ("LEADQ_UNAUTHENTICATED_PER_SEC", "1"),
        ("LEADQ_UNAUTHENTICATED_BURST", "3"),
    ])
    .await;
    let bare = |addr: &'static str| {
        app.client
            .get(format!("{}/v1/leads/x", app.address))
            .header("x-forwarded-for", addr)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(bare("192.0.2.10").await.unwrap().status(), 401);
    }
    let (status, retry, c) = code(bare("192.0.2.10").await.unwrap()).await;
    assert_eq!((status, c.as_str()), (429, "unauthenticated_rate_limited"));
    assert!(retry.is_some());
    // A console session cookie is a credential on console pages only: sent to any other route
    // it does not lift the limit (any value of it did).
    let res = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .header("x-forwarded-for", "192.0.2.10")
        .header("cookie", "leadq_console=anything")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    // Probes are exempt, and another address has its own budget.
    for _ in 0..5 {
        let res = app
            .client
            .get(format!("{}/healthz", app.address))
            .header("x-forwarded-for", "192.0.2.10")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(bare("192.0.2.11").await.unwrap().status(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_over_budget_are_accepted_at_low_priority_and_counted() {
    let app = configured_app_with(&[
        ("LEADQ_WEBHOOK_BUDGET_PER_SEC", "1"),
        ("LEADQ_WEBHOOK_BUDGET_BURST", "2"),
    ])
    .await;
    let metrics_url = format!("{}/metrics", app.address);
    let series = "leadq_webhook_over_budget_total{source=\"chatwoot\"}";
    let before = counter(&app.text(&metrics_url).await, series);
    let mut priorities = Vec::new();
    let mut conn = crate::redis_conn().await;
    for i in 0..5 {
        let body = message_body(ACCOUNT, 9000 + i, false, "incoming");
        let res = post_chatwoot(&app, &body, &format!("d-{i}")).await;
        assert_eq!(res.status(), 200, "never refused");
        let v: Value = res.json().await.unwrap();
        let job_id = v["job_id"].as_str().expect("enqueued").to_owned();
        // Normal priority is not stored (absent: normal); low is "2".
        let p: Option<String> = redis::cmd("HGET")
            .arg(format!(
                "{{{}:chatwoot_event}}:jobs",
                app.settings.queue.prefix
            ))
            .arg(format!("{job_id}:p"))
            .query_async(&mut conn)
            .await
            .unwrap();
        priorities.push(p.unwrap_or_else(|| "1".into()));
    }
    // The burst at normal priority ("1"), the rest at low ("2").
    assert_eq!(&priorities[..2], ["1", "1"], "{priorities:?}");
    assert!(priorities[2..].iter().any(|p| p == "2"), "{priorities:?}");
    let after = counter(&app.text(&metrics_url).await, series);
    assert!(after >= before + 1.0, "{before} -> {after}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_when_one_is_set() {
    let token = "m".repeat(40);
    let app = spawn_app_with(&[("LEADQ_METRICS_TOKEN", &token)]).await;
    let url = format!("{}/metrics", app.address);
    let (status, _, c) = code(app.client.get(&url).send().await.unwrap()).await;
    assert_eq!((status, c.as_str()), (401, "invalid_metrics_token"));
    let (status, _, _) = code(
        app.client
            .get(&url)
            .bearer_auth("nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let body = app
        .client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("leadq_http_requests_total"), "{body:.200}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_address_are_not_served_on_the_api_address() {
    let db = leadq_testkit::TestDb::new().await;
    let settings = leadq_testkit::settings(
        &db.url,
        &leadq_testkit::queue_prefix(),
        &[("LEADQ_METRICS_ADDR", "127.0.0.1:0")],
    );
    let app = leadq_api::Application::build(&settings).await.unwrap();
    let (api, metrics) = (app.addr(), app.metrics_addr().expect("bound"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let on_api = client
        .get(format!("http://{api}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404);
    let own = client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().contains("leadq_"));
    let _ = stop.send(());
    let _ = task.await;
}

/// A request still unanswered at `LEADQ_REQUEST_TIMEOUT_SECS` is answered 503 `timeout`
/// and counted like any other (it reached neither the request counter nor the latency
/// histogram: the timeout dropped the layer that counts). A made-up method is labelled `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_is_answered_and_counted_and_methods_are_a_fixed_set() {
    let app = spawn_app_with(&[("LEADQ_REQUEST_TIMEOUT_SECS", "1")]).await;
    let metrics_url = format!("{}/metrics", app.address);
    // The lead read waits on a lock the table's owner holds.
    let mut lock = app.db.owner_tx(app.tenant.tenant_id).await;
    sqlx::query("lock table leads in access exclusive mode")
        .execute(&mut *lock)
        .await
        .unwrap();
    let res = app
        .client
        .get(format!("{}/v1/leads/tg-1", app.address))
        .bearer_auth(app.key())
        .send()
        .await
        .unwrap();
    let header_id = res
        .headers()
        .get("x-correlation-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    // The request's id, though the body is written outside the request's scope (it was "").
    assert!(!header_id.is_empty());
    assert_eq!(
        body["error"]["correlation_id"],
        header_id.as_str(),
        "{body}"
    );
    lock.rollback().await.unwrap();
    let text = app.text(&metrics_url).await;
    let timed_out = text.lines().find(|l| {
        l.starts_with("leadq_http_requests_total{")
            && l.contains("route=\"/v1/leads/{external_id}\"")
            && l.contains("status=\"503\"")
    });
    assert!(timed_out.is_some(), "no 503 counted:\n{text}");

    let res = app
        .client
        .request(
            reqwest::Method::from_bytes(b"FROBNICATE").unwrap(),
            format!("{}/v1/leads/tg-1", app.address),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let text = app.text(&metrics_url).await;
    assert!(
        !text.contains("FROBNICATE"),
        "a method became a label value"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("leadq_http_requests_total{") && l.contains("method=\"other\"")),
        "{text}"
    );
    app.stop().await;
}

/// A webhook for a slug that names no tenant is answered 404 before its body is read (a body
/// of up to the route's limit, megabytes, was read first), and the slug is remembered as
/// unknown for a few seconds, so a sender still delivering for a deleted tenant, or a flood of
/// one made-up slug, costs no database query per request. A tenant created meanwhile takes its
/// deliveries once that memory runs out.
#[tokio::test]
async fn a_webhook_for_an_unknown_tenant_is_refused_before_its_body_and_from_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = configured_app_with(&[]).await;
    let slug = format!("later-{}", &leadq_testkit::queue_prefix()[1..]);
    let path = format!("/v1/webhooks/chatwoot/{slug}");

    // Headers announcing a megabyte, and only a few bytes of it sent.
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: 1000000\r\n\r\n{{\"event\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("no answer while the body is still being sent")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("\"not_found\""), "{answer}");

    // The tenant now exists and takes Chatwoot deliveries; this API still knows the slug as
    // unknown for a few seconds, then takes them.
    leadq_platform::tenant::create(&app.db.pool, &slug, "test")
        .await
        .unwrap();
    leadq_jobs::integrations::settings::update(
        &app.db.pool,
        &app.sealer(),
        &slug,
        &leadq_jobs::integrations::settings::TenantUpdate {
            chatwoot_account_id: Some(ACCOUNT),
            chatwoot_secret: Some(leadq_platform::secret::Secret::new(SECRET)),
            ..Default::default()
        },
        "operator:test",
    )
    .await
    .unwrap();
    let deliver = |n: i64| {
        let (app, path) = (&app, &path);
        async move {
            let body = message_body(ACCOUNT, 9000 + n, false, "incoming");
            let ts = chrono::Utc::now().timestamp();
            let headers = [
                ("x-chatwoot-delivery", format!("d-{n}")),
                ("x-chatwoot-timestamp", ts.to_string()),
                (
                    "x-chatwoot-signature",
                    leadq_jobs::integrations::chatwoot::sign(SECRET.as_bytes(), ts, &body),
                ),
            ];
            app.post_raw(path, &headers, body).await.status().as_u16()
        }
    };
    assert_eq!(
        deliver(0).await,
        404,
        "the unknown slug was looked up again"
    );
    let mut n = 0;
    leadq_testkit::wait_for(
        "the new tenant's deliveries to be taken",
        std::time::Duration::from_secs(20),
        || {
            n += 1;
            let attempt = deliver(n);
            async move { (attempt.await == 200).then_some(()) }
        },
    )
    .await;
    app.stop().await;
}
