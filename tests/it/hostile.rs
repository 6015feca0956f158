//! Hostile requests: every rejection in the standard error body with a stable code, never a 500,
//! and values PostgreSQL cannot store refused at the edge — in paths, queries, JSON bodies and
//! webhook bodies — with nothing enqueued.

use leadq_testkit::{sample_lead, spawn_app};
use serde_json::Value;

use crate::webhooks::{configured_app, post_chatwoot, ACCOUNT};

/// (status, code) of a response, asserting the standard body.
async fn standard(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = res.text().await.unwrap();
    assert!(
        ct.starts_with("application/json"),
        "{status} {ct}: {text:.200}"
    );
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    let e = &body["error"];
    assert!(
        e["message"].is_string() && e["correlation_id"].is_string(),
        "{body}"
    );
    (status, e["code"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_queries_and_methods_answer_4xx_in_the_standard_body() {
    let app = spawn_app().await;
    let key = app.key().to_owned();
    let get = |path: &str| {
        app.client
            .get(format!("{}{path}", app.address))
            .bearer_auth(&key)
            .send()
    };
    for (path, want) in [
        ("/v1/leads/%00", (400, "invalid_path")),
        ("/v1/leads/%ff", (400, "invalid_path")),
        ("/v1/leads/%ed%a0%80", (400, "invalid_path")),
        ("/v1/leads/a%0Ab", (400, "invalid_path")),
        (
            "/v1/audit?limit=99999999999999999999",
            (400, "invalid_query"),
        ),
        ("/v1/audit?limit=abc", (400, "invalid_query")),
        ("/v1/audit?limit=%00", (400, "invalid_query")),
        ("/v1/nowhere", (404, "not_found")),
    ] {
        let got = standard(get(path).await.unwrap()).await;
        assert_eq!(got, (want.0, want.1.to_owned()), "{path}");
    }
    // A wrong method: 405 with Allow, in the standard body.
    let res = app
        .client
        .put(format!("{}/v1/leads", app.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("allow").is_some(), "Allow header");
    assert_eq!(standard(res).await, (405, "method_not_allowed".into()));
    // A body over the limit, without Content-Length tricks.
    let big = vec![b'x'; 2 * 1024 * 1024];
    let res = app
        .client
        .post(format!("{}/v1/leads", app.address))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(standard(res).await, (413, "payload_too_large".into()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_lead_body_is_refused_at_the_edge_and_nothing_is_enqueued() {
    let app = spawn_app().await;
    let mut lead = sample_lead("tg-nul");
    lead["name"] = Value::String("Ada\u{0}Lovelace".into());
    let res = app.post_lead(app.key(), &lead).await;
    assert_eq!(standard(res).await, (422, "unsupported_character".into()));
    assert_eq!(app.queue.counts("lead_score").await.unwrap().pending, 0);
    // Deep nesting and huge numbers: refused as bodies, never a 500.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let res = app
        .post_raw(
            "/v1/leads",
            &[("authorization", format!("Bearer {}", app.key()))],
            deep.into_bytes(),
        )
        .await;
    assert_eq!(standard(res).await, (400, "malformed_json".into()));
    let mut huge = sample_lead("tg-huge");
    huge["answers"] = serde_json::json!({"budget": 1e308});
    let res = app.post_lead(app.key(), &huge).await;
    assert!(
        res.status().is_client_error() || res.status() == 202,
        "{}",
        res.status()
    );
    let lone = br#"{"external_id": "tg-x", "source": "telegram", "name": "\ud800"}"#;
    let res = app
        .post_raw(
            "/v1/leads",
            &[("authorization", format!("Bearer {}", app.key()))],
            lone.to_vec(),
        )
        .await;
    assert!(standard(res).await.0 < 500);
    app.stop().await;
}

/// A `message_created` body of the account, with `patch` applied at top level.
fn message_with(patch: Value) -> Vec<u8> {
    let raw = crate::webhooks::message_body(ACCOUNT, 4242, false, "incoming");
    let mut v: Value = serde_json::from_slice(&raw).unwrap();
    for (k, val) in patch.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_chatwoot_body_with_mistyped_fields_is_refused_never_coerced() {
    let app = configured_app().await;
    let cases = [
        (
            serde_json::json!({"account": {"id": "7", "name": "Acme"}}),
            "/account/id",
        ),
        (serde_json::json!({"id": "4242"}), "/id"),
        (serde_json::json!({"content": ["a", "b"]}), "/content"),
        (serde_json::json!({"private": "false"}), "/private"),
    ];
    for (i, (patch, path)) in cases.into_iter().enumerate() {
        let res = post_chatwoot(&app, &message_with(patch), &format!("typed-{i}")).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(path),
            "{body}"
        );
    }
    // NUL in the content: refused, not enqueued to fail in the handler.
    let res = post_chatwoot(
        &app,
        &message_with(serde_json::json!({"content": "hi\u{0}there"})),
        "nul-1",
    )
    .await;
    assert_eq!(standard(res).await, (422, "unsupported_character".into()));
    // The documented tolerance still holds: message_type as a number.
    let res = post_chatwoot(
        &app,
        &message_with(serde_json::json!({"message_type": 0})),
        "num-1",
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.queue.counts("chatwoot_event").await.unwrap().pending, 1);
    app.stop().await;
}
