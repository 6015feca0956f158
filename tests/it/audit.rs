//! The audit trail: append-only, hash-chained, readable by its tenant only.

use std::time::Duration;

use leadq_testkit::{sample_lead, spawn_app, wait_for, TestApp};
use serde_json::Value;

fn verify(app: &TestApp, slug: &str) -> (bool, Value) {
    let out = crate::leadq_cmd(app)
        .args(["audit", "verify", "--tenant", slug])
        .output()
        .expect("run leadq audit verify");
    let line = String::from_utf8(out.stdout).unwrap();
    (
        out.status.success(),
        serde_json::from_str(line.trim()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_audit_row_is_detected_and_the_trail_is_per_tenant() {
    let app = spawn_app().await;
    let b = app.other_tenant().await;
    let worker = app.spawn_worker().await;
    for id in ["tg-1", "tg-2"] {
        assert_eq!(
            app.post_lead(app.key(), &sample_lead(id)).await.status(),
            202
        );
    }
    wait_for("two scored leads", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 2).then_some(())
    })
    .await;
    worker.stop().await;

    let (ok, report) = verify(&app, &app.tenant.slug);
    assert!(ok, "{report}");
    assert_eq!(
        report["rows"], 3,
        "tenant.create + two lead.score: {report}"
    );
    assert_eq!(report["first_broken_id"], Value::Null);

    // Each tenant reads only its own trail.
    let mine: Value = app.get("/v1/audit", app.key()).await.json().await.unwrap();
    let actions: Vec<&str> = mine["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["lead.score", "lead.score", "tenant.create"]);
    let theirs: Value = app
        .get("/v1/audit", b.api_key.expose())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["entries"].as_array().unwrap().len(), 1);
    let page: Value = app
        .get("/v1/audit?limit=2", app.key())
        .await
        .json()
        .await
        .unwrap();
    let before = page["next_before"].as_i64().unwrap();
    let rest: Value = app
        .get(&format!("/v1/audit?limit=2&before={before}"), app.key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["entries"][0]["action"], "tenant.create");

    // The application cannot edit or delete audit rows.
    let middle = mine["entries"][1]["id"].as_i64().unwrap();
    let mut tx = app.own().await;
    let refused = sqlx::query("update audit_log set outcome = 'x' where id = $1")
        .bind(middle)
        .execute(&mut *tx)
        .await;
    // Refused by its privileges (tests/it/roles.rs), before the append-only trigger.
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("permission denied"));
    drop(tx);

    // Someone with the table owner's powers (not leadq's runtime role: tests/it/roles.rs)
    // edits a row behind the trigger's back...
    let owner = leadq_platform::db::connect(
        &leadq_platform::secret::Secret::new(app.db.owner_url.clone()),
        1,
    )
    .await
    .unwrap();
    let mut tx = leadq_platform::db::begin(
        &owner,
        leadq_platform::db::Scope::Tenant(app.tenant.tenant_id),
    )
    .await
    .unwrap();
    for sql in [
        "alter table audit_log disable trigger audit_log_append_only",
        "update audit_log set outcome = 'tampered' where id = $1",
        "alter table audit_log enable trigger audit_log_append_only",
    ] {
        sqlx::query(sql)
            .bind(middle)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    // ...and verification names the row.
    let (ok, report) = verify(&app, &app.tenant.slug);
    assert!(!ok, "verify exits non-zero on a broken chain");
    assert_eq!(report["first_broken_id"], middle, "{report}");
    // The other tenant's chain is intact.
    let (ok, _) = verify(&app, &b.slug);
    assert!(ok);
    app.stop().await;
}
