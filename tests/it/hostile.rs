//! Hostile requests: every rejection in the standard error body with a stable code, never a 500,
//! and values PostgreSQL cannot store refused at the edge — in paths, queries, JSON bodies and
//! webhook bodies — with nothing enqueued.

use leadq_testkit::{sample_lead, spawn_app};
use serde_json::Value;

use crate::webhooks::{configured_app, post_chatwoot, ACCOUNT};

/// (status, code) of a response, asserting the standard body.
async fn standard(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let header_id = res
        .headers()
        .get("x-correlation-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
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
    assert!(e["message"].is_string(), "{body}");
    // The request's own id, also where a layer outside the request's scope wrote the body
    // (a router's bare 404, a 405, a timeout): it was an empty string there.
    assert!(!header_id.is_empty(), "{status}: no x-correlation-id");
    assert_eq!(e["correlation_id"], header_id.as_str(), "{body}");
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

/// Inputs that parse, but as values PostgreSQL cannot store or no lead can have: refused at the
/// edge in the standard body, with nothing written (no tombstone, no audit entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_times_and_impossible_ids_are_refused_before_anything_is_written() {
    let app = spawn_app().await;
    let audit_entries = || async {
        let mut tx = app.own().await;
        let n: i64 = sqlx::query_scalar("select count(*) from audit_log")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let e: i64 = sqlx::query_scalar("select count(*) from erasures")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        (n, e)
    };
    let before = audit_entries().await;
    // An erasure of an id no lead can have: too long for the tombstone's index (random, so
    // that PostgreSQL cannot compress it under the index's 2,704 bytes: a 500 before), or not
    // of a lead id's form at all.
    let long: String = (0..100)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    for id in [long.as_str(), "two%20words", "%E2%80%AE"] {
        let res = app
            .client
            .delete(format!("{}/v1/leads/{id}", app.address))
            .bearer_auth(app.key())
            .send()
            .await
            .unwrap();
        assert_eq!(
            standard(res).await,
            (400, "invalid_path".into()),
            "{id:.40}"
        );
    }
    assert_eq!(audit_entries().await, before, "an erasure was recorded");
    // Audit filters with times timestamptz cannot hold (chrono parses signed years), for the
    // platform's trail and a tenant's (whose read would be audited first).
    let op = app.operator_token().to_owned();
    for q in [
        "since=-5000-01-01T00:00:00Z".to_owned(),
        "until=%2B60000-01-01T00:00:00Z".to_owned(),
        format!("tenant={}&since=-5000-01-01T00:00:00Z", app.tenant.slug),
    ] {
        let res = app
            .client
            .get(format!("{}/v1/audit/trail?{q}", app.address))
            .bearer_auth(&op)
            .send()
            .await
            .unwrap();
        assert_eq!(standard(res).await, (400, "invalid_query".into()), "{q}");
    }
    let res = app
        .client
        .get(format!(
            "{}/v1/audit/trail?since=2026-01-01T00:00:00Z",
            app.address
        ))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A dead-letter page's cursor that no page gave: the query's fault, not the body's.
    let res = app
        .client
        .get(format!(
            "{}/v1/dlq/lead_score?cursor=not-a-cursor",
            app.address
        ))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(standard(res).await, (400, "invalid_query".into()));
    // A NUL under a long key is named by the key's beginning, never echoed whole.
    let key = "k".repeat(10_000);
    let body = format!(
        r#"{{"external_id": "tg-k", "source": "telegram", "answers": {{"{key}": "a\u0000b"}}}}"#
    );
    let res = app
        .post_raw(
            "/v1/leads",
            &[("authorization", format!("Bearer {}", app.key()))],
            body.into_bytes(),
        )
        .await;
    let text = res.text().await.unwrap();
    assert!(text.contains("unsupported_character"), "{text:.300}");
    assert!(text.len() < 1000, "{} bytes: the key came back", text.len());
    app.stop().await;
}

/// A signed Chatwoot message whose `created_at` no chat has (before 1970, or beyond year 5000)
/// is taken as sent when it arrived, and stored: not enqueued to fail in the database and be
/// retried to a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatwoot_time_postgresql_cannot_store_is_taken_as_the_deliverys() {
    let app = configured_app().await;
    let worker = app.spawn_worker().await;
    for (i, at) in [-300_000_000_000_i64, 8_000_000_000_000]
        .into_iter()
        .enumerate()
    {
        let mut v: Value = serde_json::from_slice(&crate::webhooks::message_body(
            ACCOUNT,
            7000 + i as i64,
            false,
            "incoming",
        ))
        .unwrap();
        v["created_at"] = at.into();
        let res = post_chatwoot(&app, &serde_json::to_vec(&v).unwrap(), &format!("t-{i}")).await;
        assert_eq!(res.status(), 200);
    }
    let sent: Vec<chrono::DateTime<chrono::Utc>> = leadq_testkit::wait_for(
        "both messages stored",
        std::time::Duration::from_secs(20),
        || async {
            let mut tx = app.own().await;
            let at: Vec<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("select sent_at from lead_messages where source = 'chatwoot'")
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
            (at.len() == 2).then_some(at)
        },
    )
    .await;
    let now = chrono::Utc::now();
    for at in sent {
        assert!((now - at).num_seconds().abs() < 120, "{at}");
    }
    assert_eq!(app.queue.counts("chatwoot_event").await.unwrap().failed, 0);
    worker.stop().await;
    app.stop().await;
}
