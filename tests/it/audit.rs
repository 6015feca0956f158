//! The audit trail: append-only, hash-chained, readable by its tenant only.

use std::time::Duration;

use leadq_testkit::{sample_lead, spawn_app, wait_for, TestApp};
use serde_json::Value;

/// Posts leads tg-1 and tg-2 and waits until a running worker has scored both.
async fn score_two_leads(app: &TestApp) {
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
}

pub(crate) fn verify(app: &TestApp, slug: &str) -> (bool, Value) {
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
    score_two_leads(&app).await;
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
    // Paged (each read above is itself audited, `audit.read`, as it arrives: a filter keeps
    // the pages still).
    let page: Value = app
        .get("/v1/audit?limit=1&action=lead.score", app.key())
        .await
        .json()
        .await
        .unwrap();
    let before = page["next_before"].as_i64().unwrap();
    let rest: Value = app
        .get(
            &format!("/v1/audit?limit=2&action=lead.score&before={before}"),
            app.key(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    assert_eq!(rest["entries"][0]["id"], mine["entries"][1]["id"]);

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
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_rewritten_with_a_recomputed_unkeyed_chain_is_still_caught() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    for id in ["tg-1", "tg-2", "tg-3"] {
        assert_eq!(
            app.post_lead(app.key(), &sample_lead(id)).await.status(),
            202
        );
    }
    wait_for("three scored leads", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 3).then_some(())
    })
    .await;
    worker.stop().await;
    let (ok, report) = verify(&app, &app.tenant.slug);
    assert!(ok, "{report}");
    assert_eq!(
        report["sealed"], 4,
        "tenant.create + three lead.score: {report}"
    );

    // Someone with the owner's powers rewrites the second sealed row and, not having the audit
    // key, recomputes every link from there on as an unkeyed SHA-256 chain.
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
    let target: i64 = sqlx::query_scalar("select id from audit_log where seal_seq = 2")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    for sql in [
        "alter table audit_log disable trigger audit_log_append_only",
        "update audit_log set outcome = 'tampered' where seal_seq = 2",
        "update audit_log a set mac = sha256(coalesce(p.mac, ''::bytea)
               || int8send(a.seal_seq)
               || audit_canonical(a.tenant_id, a.actor, a.action, a.subject, a.outcome,
                                  a.correlation_id, a.details, a.at))
           from audit_log p
          where p.seal_seq = a.seal_seq - 1 and a.seal_seq >= 2
            and coalesce(p.tenant_id, a.tenant_id) = a.tenant_id",
        "alter table audit_log enable trigger audit_log_append_only",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let (ok, report) = verify(&app, &app.tenant.slug);
    assert!(!ok, "verify exits non-zero: {report}");
    assert_eq!(report["first_broken_id"], target, "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_chained_before_keyed_sealing_stay_verifiable_and_the_keyed_chain_continues() {
    let app = spawn_app().await;
    let b = app.other_tenant().await;
    // Two rows as the old trigger chained them (sha256 links), written as the owner.
    let mut tx = app.db.owner_tx(b.tenant_id).await;
    sqlx::query("delete from audit_log")
        .execute(&mut *tx)
        .await
        .ok();
    drop(tx);
    let mut tx = app.db.owner_tx(b.tenant_id).await;
    for (i, action) in ["legacy.one", "legacy.two"].iter().enumerate() {
        sqlx::query(
            "insert into audit_log (tenant_id, actor, action, subject, outcome, correlation_id,
                                    details, at, prev_hash, hash)
             select $1, 'cli', $2, 'x', 'ok', 'c', '{}', now() - interval '1 hour' + $3 * interval '1 s',
                    p.hash,
                    audit_row_hash(p.hash, $1, 'cli', $2, 'x', 'ok', 'c', '{}',
                                   now() - interval '1 hour' + $3 * interval '1 s')
               from (select (select hash from audit_log where hash is not null
                              order by id desc limit 1) as hash) p",
        )
        .bind(b.tenant_id)
        .bind(action)
        .bind(i as f64)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    // A new row, the keyed way, after them.
    let (ok, report) = verify(&app, &b.slug);
    assert!(ok, "{report}");
    assert_eq!(
        report["rows"], 3,
        "tenant.create was chained the new way: {report}"
    );

    // An edit of a legacy row is still named.
    let mut tx = app.db.owner_tx(b.tenant_id).await;
    let legacy: i64 = sqlx::query_scalar("select id from audit_log where action = 'legacy.one'")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    for sql in [
        "alter table audit_log disable trigger audit_log_append_only",
        "update audit_log set subject = 'y' where action = 'legacy.one'",
        "alter table audit_log enable trigger audit_log_append_only",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let (ok, report) = verify(&app, &b.slug);
    assert!(!ok);
    assert_eq!(report["first_broken_id"], legacy, "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sealers_racing_over_concurrent_writers_leave_one_gap_free_chain() {
    let app = spawn_app().await;
    let keys = app.settings.audit_keys().clone();
    let pool = app.db.pool.clone();
    let auditor = leadq_platform::audit::Auditor {
        tenant_id: Some(app.tenant.tenant_id),
        actor: "cli",
        correlation_id: "race",
    };
    // Eight writers, 50 rows each, while two sealers run as fast as they can.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sealers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, keys, stop) = (pool.clone(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    leadq_platform::audit::seal::seal_all(&pool, &keys)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let mut tx = leadq_platform::db::begin(
                        &pool,
                        leadq_platform::db::Scope::Tenant(auditor.tenant_id.unwrap()),
                    )
                    .await
                    .unwrap();
                    auditor
                        .entry("race.write", &format!("{w}-{i}"))
                        .record(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in sealers {
        s.await.unwrap();
    }
    let (ok, report) = verify(&app, &app.tenant.slug);
    assert!(ok, "{report}");
    assert_eq!(report["rows"], 401, "{report}");
    assert_eq!(report["sealed"], 401, "every row sealed once: {report}");
    app.stop().await;
}

/// Writes `n` audit rows of the test tenant, each in its own transaction.
pub(crate) async fn write_rows(app: &TestApp, n: usize, action: &str) {
    let auditor = leadq_platform::audit::Auditor {
        tenant_id: Some(app.tenant.tenant_id),
        actor: "cli",
        correlation_id: "tail",
    };
    for i in 0..n {
        let mut tx = app.own().await;
        auditor
            .entry(action, &i.to_string())
            .record(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sealer_finds_every_chain_with_rows_to_seal_and_none_once_sealed() {
    use leadq_platform::audit::seal;
    use leadq_platform::db::Scope;
    let app = spawn_app().await;
    let keys = app.settings.audit_keys().clone();
    let b = app.other_tenant().await;
    let c = app.other_tenant().await;
    // Rows of three tenants and of the platform's own chain, each in its own transaction.
    for tenant in [
        Some(app.tenant.tenant_id),
        Some(b.tenant_id),
        None,
        Some(c.tenant_id),
    ] {
        for i in 0..3 {
            let auditor = leadq_platform::audit::Auditor {
                tenant_id: tenant,
                actor: "cli",
                correlation_id: "chains",
            };
            let scope = tenant.map_or(Scope::Platform, Scope::Tenant);
            let mut tx = leadq_platform::db::begin(&app.db.pool, scope)
                .await
                .unwrap();
            auditor
                .entry("chains.write", &i.to_string())
                .record(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
    let key = |s: &Scope| match s {
        Scope::Tenant(t) => t.to_string(),
        Scope::Platform => "platform".to_owned(),
    };
    let mut want: Vec<String> = [app.tenant.tenant_id, b.tenant_id, c.tenant_id]
        .iter()
        .map(|t| t.to_string())
        .chain(["platform".to_owned()])
        .collect();
    want.sort();
    let mut found: Vec<String> = seal::pending_scopes(&app.db.pool)
        .await
        .unwrap()
        .iter()
        .map(key)
        .collect();
    found.sort();
    assert_eq!(found, want, "each chain with unsealed rows, once");
    // Sealed (a pass seals only what every running transaction can see: retried), none left.
    wait_for("every chain sealed", Duration::from_secs(30), || async {
        seal::seal_all(&app.db.pool, &keys).await.unwrap();
        let left = seal::pending_scopes(&app.db.pool).await.unwrap();
        left.is_empty().then_some(())
    })
    .await;
    for tenant in [&app.tenant.slug, &b.slug, &c.slug] {
        let (ok, report) = verify(&app, tenant);
        assert!(ok, "{report}");
        assert!(report["rows"].as_i64() >= Some(3), "{report}");
        assert_eq!(report["sealed"], report["rows"], "{report}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sealer_starts_from_its_recorded_tail_only_when_the_rows_agree() {
    let app = spawn_app().await;
    let keys = app.settings.audit_keys().clone();
    // Until the chain has no unsealed row: a pass seals only rows behind the horizon of every
    // transaction running on the server, and the other tests' databases share the server.
    let seal = || async {
        wait_for("the chain sealed", Duration::from_secs(30), || async {
            leadq_platform::audit::seal::seal_all(&app.db.pool, &keys)
                .await
                .unwrap();
            let left: i64 = sqlx::query_scalar(
                "select count(*) from audit_log where hash is null and mac is null",
            )
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
            (left == 0).then_some(())
        })
        .await;
        Ok::<(), sqlx::Error>(())
    };
    let tail = || async {
        let mut tx = app.own().await;
        let t: (i64, Vec<u8>) =
            sqlx::query_as("select seal_seq, mac from audit_chain_tails where chain = $1")
                .bind(app.tenant.tenant_id.to_string())
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        t
    };
    write_rows(&app, 5, "tail.first").await;
    seal().await.unwrap();
    let rows: i64 = sqlx::query_scalar("select count(*) from audit_log where seal_seq is not null")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    let (seq, mac) = tail().await;
    assert_eq!(seq, rows, "the batch recorded where the chain ends");
    let last: Vec<u8> = sqlx::query_scalar("select mac from audit_log where seal_seq = $1")
        .bind(seq)
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(mac, last);

    // A record that lags (as an older release's sealer leaves it) or names another link is
    // not trusted: the next batch continues from the rows, one gap-free chain.
    for edit in [
        "update audit_chain_tails set seal_seq = seal_seq - 3",
        "update audit_chain_tails set mac = '\\x00'",
    ] {
        let mut tx = app.own().await;
        sqlx::query(edit).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        write_rows(&app, 3, "tail.more").await;
        seal().await.unwrap();
    }
    let (ok, report) = verify(&app, &app.tenant.slug);
    assert!(ok, "{report}");
    assert_eq!(report["sealed"], report["rows"], "{report}");
    assert_eq!(tail().await.0, report["sealed"].as_i64().unwrap());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_writes_signed_lines_in_chain_order_that_a_consumer_can_check() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    score_two_leads(&app).await;
    worker.stop().await;
    let out = crate::leadq_cmd(&app)
        .args(["audit", "export", "--since", "2000-01-01T00:00:00Z"])
        .args(["--tenant", &app.tenant.slug])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "tenant.create + two lead.score: {text}");
    let keys = app.settings.audit_keys();
    for (i, line) in lines.iter().enumerate() {
        assert!(
            leadq_platform::audit::export::verify_line(line, keys),
            "{line}"
        );
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seal_seq"], i as i64 + 1, "chain order: {line}");
    }
    // A line edited on its way (or in storage) fails its signature; so does another key.
    let edited = lines[1].replace("\"outcome\":\"ok\"", "\"outcome\":\"tampered\"");
    assert_ne!(edited, lines[1]);
    assert!(!leadq_platform::audit::export::verify_line(&edited, keys));
    let other = leadq_platform::keyring::Keyring::random(&keys.current().kid);
    assert!(!leadq_platform::audit::export::verify_line(
        lines[1], &other
    ));
    app.stop().await;
}

/// `GET /v1/audit` filters by action and subject; `job_runs` names who each run acted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_filters_by_action_and_subject_and_runs_name_their_principal() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    score_two_leads(&app).await;
    let a = &app;
    let json = move |path: String| async move {
        let res = a.get(&path, a.key()).await;
        assert_eq!(res.status(), 200, "{path}");
        res.json::<Value>().await.unwrap()
    };
    let scored = json("/v1/audit?action=lead.score".into()).await;
    let entries = scored["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["action"] == "lead.score"));
    let subject = entries[0]["subject"].as_str().unwrap().to_owned();
    let one = json(format!("/v1/audit?action=lead.score&subject={subject}")).await;
    assert_eq!(one["entries"].as_array().unwrap().len(), 1);
    assert_eq!(one["entries"][0]["subject"], subject.as_str());
    let none = json("/v1/audit?action=lead.erase".into()).await;
    assert_eq!(none["entries"], serde_json::json!([]));
    let bad = app.get("/v1/audit?action=Lead%20Score", app.key()).await;
    assert_eq!(bad.status(), 400);

    // Each run's principal, written by the run log (off the job's path: wait for it).
    let principals = wait_for("both runs recorded", Duration::from_secs(10), || async {
        let rows: Vec<Option<String>> = sqlx::query_scalar(
            "select user_id from job_runs where status = 'completed' order by job_id",
        )
        .fetch_all(&mut *app.own().await)
        .await
        .unwrap();
        (rows.len() == 2).then_some(rows)
    })
    .await;
    assert_eq!(principals, vec![Some(app.key_actor()); 2]);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_trail_is_itself_audited_in_batches_and_the_chain_still_verifies() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    score_two_leads(&app).await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/audit?limit=5", app.key()).await.status(), 200);
    }
    // Reading a lead is audited too, by its id (a miss reads nothing and is not).
    assert_eq!(app.get("/v1/leads/tg-1", app.key()).await.status(), 200);
    assert_eq!(app.get("/v1/leads/tg-none", app.key()).await.status(), 404);
    let lead_reads = wait_for("the lead read", Duration::from_secs(10), || async {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "select a.subject, l.external_id from audit_log a
               join leads l on a.subject = 'lead:' || l.id where a.action = 'lead.read'",
        )
        .fetch_all(&mut *app.own().await)
        .await
        .unwrap();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(lead_reads.len(), 1);
    assert_eq!(lead_reads[0].1, "tg-1");
    // Written off the request's path: they arrive within a batch or two.
    let reads: Vec<(String, Value)> =
        wait_for("three audited reads", Duration::from_secs(10), || async {
            let rows: Vec<(String, Value)> = sqlx::query_as(
                "select actor, details from audit_log where action = 'audit.read' order by id",
            )
            .fetch_all(&mut *app.own().await)
            .await
            .unwrap();
            (rows.len() == 3).then_some(rows)
        })
        .await;
    assert!(reads.iter().all(|(actor, _)| *actor == app.key_actor()));
    assert_eq!(
        reads[0].1["entries"], 3,
        "the first read saw tenant.create and the two scores"
    );
    // Another tenant's trail has none of them.
    let other = app.other_tenant().await;
    let theirs: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'audit.read'")
            .fetch_one(&mut *app.scoped(other.tenant_id).await)
            .await
            .unwrap();
    assert_eq!(theirs, 0);
    // The batched rows are sealed into the tenant's chain like any other.
    let slug = app.tenant.slug.clone();
    let verified = wait_for(
        "the chain sealed and verified",
        Duration::from_secs(20),
        || async {
            let (ok, report) = verify(&app, &slug);
            (ok && report["sealed"].as_u64() == Some(7)).then_some(report)
        },
    )
    .await;
    assert_eq!(
        verified["rows"], 7,
        "tenant.create, two scores, three trail reads, one lead read"
    );
    assert_eq!(verified["first_broken_id"], Value::Null);
    worker.stop().await;
    app.stop().await;
}
