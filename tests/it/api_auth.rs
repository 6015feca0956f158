//! Authentication of producers.

use leadq_testkit::{sample_lead, spawn_app};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_key_gets_401_and_enqueues_nothing() {
    let app = spawn_app().await;
    let url = format!("{}/v1/leads", app.address);
    let wrong_secret = {
        let k = app.key();
        let mut s = k[..k.len() - 1].to_owned();
        s.push(if k.ends_with('0') { '1' } else { '0' });
        s
    };
    let unknown = format!("lq_{}_{}", "0".repeat(12), "a".repeat(64));
    for (what, auth) in [
        ("no header", None),
        ("not bearer", Some(format!("Basic {}", app.key()))),
        ("garbage", Some("Bearer hello".to_owned())),
        ("unknown key", Some(format!("Bearer {unknown}"))),
        ("wrong secret", Some(format!("Bearer {wrong_secret}"))),
    ] {
        let mut req = app.client.post(&url).json(&sample_lead("tg-1"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{what}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key", "{what}");
        assert_eq!(
            body["error"]["message"], "missing or invalid API key",
            "{what}"
        );
    }
    let res = app.get("/v1/status", "nope").await;
    assert_eq!(res.status(), 401);
    for (h, v) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(res.headers()[h], v, "{h}");
    }
    // Plain HTTP without LEADQ_BEHIND_TLS_PROXY: no HSTS (tests/it/tls.rs covers when it is sent).
    assert!(res.headers().get("strict-transport-security").is_none());
    let metrics = app.text(&format!("{}/metrics", app.address)).await;
    assert!(
        metrics.contains("leadq_auth_failures_total{reason=\"invalid\"}"),
        "{metrics}"
    );
    assert_eq!(app.queue.counts("lead_score").await.unwrap().pending, 0);
    app.stop().await;
}
