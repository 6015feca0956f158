//! The end of an audit chain: rows deleted from it are named, sealing does not paper over them,
//! and an export continues from what it shipped, not from a time.

use std::time::Duration;

use leadq_platform::audit::seal;
use leadq_testkit::{spawn_app, wait_for, TestApp};
use serde_json::Value;

use crate::audit::{verify, write_rows};

/// Seals until the test tenant's chain has no unsealed row. A pass seals only rows behind the
/// horizon of every transaction running on the server, and other tests share the server.
async fn seal_everything(app: &TestApp) {
    let keys = app.settings.audit_keys().clone();
    wait_for("the chain sealed", Duration::from_secs(30), || async {
        seal::seal_all(&app.db.pool, &keys).await.unwrap();
        (unsealed(app).await == 0).then_some(())
    })
    .await;
}

async fn unsealed(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from audit_log where hash is null and mac is null")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap()
}

/// Deletes the test tenant's `n` newest sealed rows as the table's owner, past the trigger
/// (what the runtime role cannot do).
async fn cut_newest(app: &TestApp, n: i64) {
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
    for sql in [
        "alter table audit_log disable trigger audit_log_append_only",
        "delete from audit_log where seal_seq > (select max(seal_seq) from audit_log) - $1",
        "alter table audit_log enable trigger audit_log_append_only",
    ] {
        let q = sqlx::query(sql);
        let q = if sql.contains("$1") { q.bind(n) } else { q };
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

fn run(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = crate::leadq_cmd(app)
        .args(args)
        .output()
        .expect("run leadq");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_cut_from_a_chains_end_are_named_and_hold_its_sealing_until_accepted() {
    let app = spawn_app().await;
    let slug = app.tenant.slug.clone();
    write_rows(&app, 5, "tail.first").await;
    seal_everything(&app).await;
    let (ok, report) = verify(&app, &slug);
    assert!(ok, "{report}");
    assert_eq!(report["tail_record"], "matches", "{report}");
    let end = report["sealed"].as_i64().unwrap();

    // The two newest rows go: what is left is a gap-free chain, but not where it ended.
    cut_newest(&app, 2).await;
    let (ok, report) = verify(&app, &slug);
    assert!(!ok, "verify exits non-zero: {report}");
    assert_eq!(report["tail_record"], "ahead", "{report}");
    assert_eq!(report["recorded_tail_seq"], end, "{report}");
    assert_eq!(report["sealed"], end - 2, "{report}");

    // The chain's next row is not sealed into the gap (it would take the missing numbers and
    // leave a chain that verifies): the sealer holds the chain, and says so.
    write_rows(&app, 1, "tail.after").await;
    let pass = seal::seal_all(&app.db.pool, app.settings.audit_keys())
        .await
        .unwrap();
    let chain = app.tenant.tenant_id.to_string();
    let held = pass.held.iter().find(|h| h.chain == chain);
    assert_eq!(
        held.map(|h| (h.recorded_seq, h.rows_end_seq)),
        Some((end, end - 2)),
        "{pass:?}"
    );
    assert_eq!(unsealed(&app).await, 1);
    let (ok, out, err) = run(&app, &["audit", "seal"]);
    assert!(!ok, "seal exits non-zero while a chain is held: {out}");
    assert!(err.contains("accept-truncation"), "{err}");
    let (ok, report) = verify(&app, &slug);
    assert!(!ok, "still broken after a sealing pass: {report}");
    assert_eq!(report["tail_record"], "ahead", "{report}");
    // A worker's sealer says so within a pass, as a failing security check (an alert in
    // minutes, where the daily verification took up to a day).
    let worker = app.spawn_worker().await;
    let metrics = format!("http://{}/metrics", worker.health);
    let check = |value: &'static str| {
        let metrics = metrics.clone();
        let app = &app;
        async move {
            let m = app.text(&metrics).await;
            m.contains(&format!(
                "leadq_security_check_ok{{check=\"audit_sealing\"}} {value}"
            ))
            .then_some(())
        }
    };
    wait_for("the sealing check failing", Duration::from_secs(20), || {
        check("0")
    })
    .await;

    // An operator who has looked accepts the loss: it becomes the chain's next row.
    let (ok, out, err) = run(
        &app,
        &[
            "audit",
            "accept-truncation",
            "--tenant",
            &slug,
            "--operator",
            "alice",
        ],
    );
    assert!(ok, "{out} {err}");
    let accepted: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(accepted["accepted"]["recorded_seq"], end, "{accepted}");
    wait_for("the sealing check passing", Duration::from_secs(20), || {
        check("1")
    })
    .await;
    worker.stop().await;
    seal_everything(&app).await;
    let (ok, report) = verify(&app, &slug);
    assert!(ok, "{report}");
    assert_eq!(report["tail_record"], "matches", "{report}");
    let rows: Vec<(String, String, i64, Value)> = sqlx::query_as(
        "select action, actor, seal_seq, details from audit_log
          where seal_seq > $1 order by seal_seq",
    )
    .bind(end - 2)
    .fetch_all(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].2), ("tail.after", end - 1));
    let (action, actor, seq, details) = &rows[1];
    assert_eq!(
        (action.as_str(), actor.as_str()),
        ("audit.truncation_accepted", "operator:alice")
    );
    assert_eq!(
        *seq, end,
        "the loss is in the chain, after the rows that waited"
    );
    assert_eq!(
        *details,
        serde_json::json!({"recorded_seq": end, "rows_end_seq": end - 2, "missing": 2})
    );
    let (ok, _, err) = run(&app, &["audit", "accept-truncation", "--tenant", &slug]);
    assert!(!ok, "nothing left to accept");
    assert!(err.contains("no truncation to accept"), "{err}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_continues_after_its_last_line_and_refuses_a_chain_cut_behind_it() {
    let app = spawn_app().await;
    let slug = app.tenant.slug.clone();
    write_rows(&app, 3, "export.first").await;
    seal_everything(&app).await;
    let (ok, first, err) = run(
        &app,
        &[
            "audit",
            "export",
            "--tenant",
            &slug,
            "--since",
            "2000-01-01T00:00:00Z",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        first.lines().count(),
        4,
        "tenant.create and three rows: {first}"
    );
    let shipped = std::env::temp_dir().join(format!("leadq-export-{}.jsonl", uuid::Uuid::new_v4()));
    std::fs::write(&shipped, &first).unwrap();
    let after = shipped.to_str().unwrap();
    let exported_at = chrono::Utc::now();

    // A row whose transaction began before that export but was sealed after it (its `at` is
    // when the transaction began): an export by time from then on never ships it.
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
    sqlx::query(
        "insert into audit_log (tenant_id, actor, action, subject, outcome, correlation_id,
                                details, at)
         values ($1, 'cli', 'export.late', 'x', 'ok', 'c', '{}', now() - interval '1 minute')",
    )
    .bind(app.tenant.tenant_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    seal_everything(&app).await;
    let since = exported_at.to_rfc3339();
    let (ok, by_time, err) = run(
        &app,
        &["audit", "export", "--tenant", &slug, "--since", &since],
    );
    assert!(ok, "{err}");
    assert!(!by_time.contains("export.late"), "{by_time}");
    let (ok, next, err) = run(
        &app,
        &["audit", "export", "--tenant", &slug, "--after", after],
    );
    assert!(ok, "{err}");
    let lines: Vec<Value> = next
        .lines()
        .map(|l| {
            assert!(leadq_platform::audit::export::verify_line(
                l,
                app.settings.audit_keys()
            ));
            serde_json::from_str(l).unwrap()
        })
        .collect();
    assert_eq!(lines.len(), 1, "{next}");
    assert_eq!(lines[0]["action"], "export.late");
    assert_eq!(
        lines[0]["seal_seq"], 5,
        "the next link after the shipped ones"
    );
    std::fs::write(&shipped, format!("{first}{next}")).unwrap();
    let (ok, none, err) = run(
        &app,
        &["audit", "export", "--tenant", &slug, "--after", after],
    );
    assert!(ok && none.is_empty(), "nothing new: {none} {err}");

    // The newest shipped row is cut from the chain: continuing says so, rather than shipping
    // whatever takes its number next.
    cut_newest(&app, 1).await;
    let (ok, out, err) = run(
        &app,
        &["audit", "export", "--tenant", &slug, "--after", after],
    );
    assert!(!ok, "{out}");
    assert!(
        err.contains("no longer holds what was exported: seal_seq 5 is missing"),
        "{err}"
    );
    // Once an operator has accepted the loss, the copy goes on where the chain does: from its
    // rows' end, with the acceptance itself (which now holds seal_seq 5).
    let (ok, _, err) = run(&app, &["audit", "accept-truncation", "--tenant", &slug]);
    assert!(ok, "{err}");
    seal_everything(&app).await;
    let (ok, next, err) = run(
        &app,
        &["audit", "export", "--tenant", &slug, "--after", after],
    );
    assert!(ok, "{err}");
    let lines: Vec<Value> = next
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{next}");
    assert_eq!(lines[0]["action"], "audit.truncation_accepted");
    assert_eq!(lines[0]["seal_seq"], 5);

    // A line edited in storage is not a place to continue from.
    std::fs::write(&shipped, first.replace("export.first", "export.forged")).unwrap();
    let (ok, _, err) = run(
        &app,
        &["audit", "export", "--tenant", &slug, "--after", after],
    );
    assert!(!ok);
    assert!(err.contains("line 2 of"), "{err}");
    std::fs::remove_file(&shipped).ok();
    app.stop().await;
}
