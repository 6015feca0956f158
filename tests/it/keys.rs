//! API-key administration through the `leadq key` commands.

use leadq_testkit::{sample_lead, spawn_app, TestApp};
use serde_json::Value;

fn leadq(app: &TestApp, args: &[&str]) -> (i32, String) {
    let out = crate::leadq_cmd(app)
        .args(args)
        .env("LEADQ_OPERATOR", "alice")
        .output()
        .expect("run leadq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

async fn status_with(app: &TestApp, key: &str) -> (u16, String) {
    let res = app.get("/v1/leads/nope", key).await;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_listed_rotated_with_overlap_revoked_and_audited() {
    let app = spawn_app().await;
    let slug = app.tenant.slug.clone();

    let (code, out) = leadq(
        &app,
        &[
            "key",
            "create",
            &slug,
            "--scopes",
            "leads:read",
            "--expires-in",
            "1h",
        ],
    );
    assert_eq!(code, 0);
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    let reader = created["api_key"].as_str().unwrap().to_owned();
    let reader_id = created["key_id"].as_str().unwrap().to_owned();

    // Scoped: may read (404 for a missing lead), may not write.
    assert_eq!(status_with(&app, &reader).await, (404, "not_found".into()));
    let res = app.post_lead(&reader, &sample_lead("tg-1")).await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_scope");

    // Listed without secrets.
    let (code, out) = leadq(&app, &["key", "list", &slug]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2);
    let secret_part = reader.rsplit('_').next().unwrap();
    assert!(
        !out.contains(secret_part),
        "a listing must never show a key"
    );

    // Rotation: both keys work during the overlap.
    let (code, out) = leadq(&app, &["key", "rotate", &reader_id, "--overlap", "10m"]);
    assert_eq!(code, 0);
    let rotated = serde_json::from_str::<Value>(out.trim()).unwrap();
    let successor = rotated["api_key"].as_str().unwrap().to_owned();
    let successor_id = rotated["key_id"].as_str().unwrap().to_owned();
    // Without --expires-in the successor is issued for as long as the old key was (1 h), not
    // for ever.
    let until: chrono::DateTime<chrono::Utc> =
        rotated["expires_at"].as_str().unwrap().parse().unwrap();
    let left = until - chrono::Utc::now();
    assert!(
        left > chrono::TimeDelta::minutes(55) && left <= chrono::TimeDelta::minutes(61),
        "{rotated}"
    );
    // Rotated again within the overlap (the first successor's secret was lost): issued for
    // the same hour, not for what is left of the shortened old key (10 minutes).
    let (code, out) = leadq(&app, &["key", "rotate", &reader_id, "--overlap", "10m"]);
    assert_eq!(code, 0);
    let again = serde_json::from_str::<Value>(out.trim()).unwrap();
    let until: chrono::DateTime<chrono::Utc> =
        again["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        until - chrono::Utc::now() > chrono::TimeDelta::minutes(55),
        "{again}"
    );
    assert_eq!(status_with(&app, &reader).await.0, 404);
    assert_eq!(status_with(&app, &successor).await.0, 404);

    // Once the overlap is over (time moved forward here), the old key is refused as expired.
    let mut tx = app.own().await;
    sqlx::query("update api_keys set expires_at = now() - interval '1 second' where id = $1::uuid")
        .bind(&reader_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The API's cached answer learns of the change from its notification, which arrives a
    // moment after the commit (the stated bound: at the latest one TTL after the read).
    let deadline = std::time::Instant::now()
        + leadq_platform::principals::TTL
        + std::time::Duration::from_secs(1);
    let mut seen = status_with(&app, &reader).await;
    while seen.0 != 401 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        seen = status_with(&app, &reader).await;
    }
    assert_eq!(seen, (401, "api_key_expired".into()));

    // Revocation is immediate.
    assert_eq!(leadq(&app, &["key", "revoke", &successor_id]).0, 0);
    assert_eq!(
        status_with(&app, &successor).await,
        (401, "api_key_revoked".into())
    );
    assert_eq!(
        status_with(&app, app.key()).await.0,
        404,
        "other keys unaffected"
    );

    // Bad input is refused with a clear code, not a crash.
    assert_eq!(
        leadq(&app, &["key", "create", &slug, "--scopes", "leads:delete"]).0,
        2
    );
    assert_eq!(
        leadq(
            &app,
            &["key", "create", "no-such-tenant", "--scopes", "admin"]
        )
        .0,
        2
    );

    // Every operator action is in the tenant's trail, with the operator as actor.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select action, actor from audit_log where action like 'api_key.%' order by id",
    )
    .fetch_all(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("api_key.create".into(), "operator:alice".into()),
            ("api_key.rotate".into(), "operator:alice".into()),
            ("api_key.rotate".into(), "operator:alice".into()),
            ("api_key.revoke".into(), "operator:alice".into()),
        ]
    );
    app.stop().await;
}
