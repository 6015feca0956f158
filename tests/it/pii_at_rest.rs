//! Personal data at rest: sealed rows with a blind index, the batched conversion and re-seal
//! after a key rotation, erasure by email or phone, the tokenized export.

use std::time::Duration;

use leadq_jobs::pii::{at_rest, field, Sealer};
use leadq_platform::keyring::Keyring;
use leadq_testkit::{sample_lead, spawn_app, wait_for, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

/// The stored contact columns of one lead, as PostgreSQL holds them.
#[derive(Debug, sqlx::FromRow)]
struct Raw {
    name: Option<String>,
    username: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    phone_index: Option<String>,
    email_index: Option<String>,
}

async fn raw(app: &TestApp, external_id: &str) -> Raw {
    sqlx::query_as(
        "select name, username, phone, email, phone_index, email_index
           from leads where external_id = $1",
    )
    .bind(external_id)
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap()
}

async fn find(app: &TestApp, sealer: &Sealer, f: &str, value: &str) -> Vec<String> {
    at_rest::find_by_contact(
        &mut *app.own().await,
        sealer,
        app.tenant.tenant_id,
        f,
        value,
    )
    .await
    .unwrap()
}

async fn scored(app: &TestApp, done: u64) {
    wait_for("the leads scored", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == done).then_some(())
    })
    .await;
}

fn lead_with(external_id: &str, email: &str, phone: &str) -> Value {
    let mut l = sample_lead(external_id);
    l["email"] = json!(email);
    l["phone"] = json!(phone);
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leads_contact_is_stored_sealed_and_found_by_its_blind_index() {
    let app = spawn_app().await;
    let b = app.other_tenant().await;
    let worker = app.spawn_worker().await;
    let body = lead_with("tg-1", "Ada@Example.com", "+44 20 7946 0000");
    assert_eq!(app.post_lead(app.key(), &body).await.status(), 202);
    assert_eq!(app.post_lead(b.api_key.expose(), &body).await.status(), 202);
    scored(&app, 2).await;
    worker.stop().await;

    let r = raw(&app, "tg-1").await;
    let sealer = app.sealer();
    let t = app.tenant.tenant_id;
    for (f, v, clear) in [
        (field::NAME, &r.name, "Ada Lovelace"),
        (field::USERNAME, &r.username, "ada"),
        (field::PHONE, &r.phone, "+44 20 7946 0000"),
        (field::EMAIL, &r.email, "Ada@Example.com"),
    ] {
        let v = v.as_deref().unwrap();
        assert!(v.starts_with("sealed:v1:data:"), "{f} stored sealed: {v}");
        assert!(!v.contains("Ada") && !v.contains("7946"), "{v}");
        assert_eq!(
            sealer.open(t, f, v).unwrap(),
            clear,
            "{f} opens for its tenant"
        );
    }
    assert_eq!(
        r.email_index,
        sealer.blind_index(t, field::EMAIL, "ada@example.com")
    );
    assert_eq!(
        r.phone_index,
        sealer.blind_index(t, field::PHONE, "+442079460000")
    );

    // The tenant's authorized read gets its data back in clear.
    let got: Value = app
        .get("/v1/leads/tg-1", app.key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["email"], "Ada@Example.com");
    assert_eq!(got["name"], "Ada Lovelace");
    assert_eq!(got["phone"], "+44 20 7946 0000");

    // Found by email or phone in any spelling; not by another value, nor by another tenant
    // (B's lead with the same email has another index).
    assert_eq!(
        find(&app, &sealer, field::EMAIL, " ADA@example.COM").await,
        ["tg-1"]
    );
    assert_eq!(
        find(&app, &sealer, field::PHONE, "+442079460000").await,
        ["tg-1"]
    );
    assert!(find(&app, &sealer, field::EMAIL, "eve@example.com")
        .await
        .is_empty());
    let b_index: Option<String> =
        sqlx::query_scalar("select email_index from leads where external_id = 'tg-1'")
            .fetch_one(&mut *app.scoped(b.tenant_id).await)
            .await
            .unwrap();
    assert_ne!(b_index, r.email_index, "no linking across tenants");
    app.stop().await;
}

/// Rows as a release before sealing at rest wrote them: every field in clear, no index.
async fn insert_legacy(app: &TestApp, n: usize) {
    let mut tx = app.own().await;
    for i in 0..n {
        let id: Uuid = sqlx::query_scalar(
            "insert into leads (tenant_id, external_id, source, name, username, phone, email)
             values ($1, $2, 'telegram', $3, 'handle', '+44 7700 900' || $4, $5) returning id",
        )
        .bind(app.tenant.tenant_id)
        .bind(format!("old-{i}"))
        .bind(format!("Person {i}"))
        .bind(format!("{:03}", i))
        .bind(format!("p{i}@example.com"))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "insert into lead_messages (tenant_id, lead_id, source, source_id, content, sent_at)
             values ($1, $2, 'chatwoot', $3, 'call me on +44 7700 900123', now())",
        )
        .bind(app.tenant.tenant_id)
        .bind(id)
        .bind(format!("m-{i}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

fn reseal(app: &TestApp, env: &[(&str, &str)]) -> (bool, Value) {
    let out = crate::leadq_cmd(app)
        .args(["lead", "reseal", "--batch", "2"])
        .envs(env.iter().copied())
        .output()
        .expect("run leadq lead reseal");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "a JSON report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_rows_are_converted_in_batches_and_resealed_after_a_key_rotation() {
    let app = spawn_app().await;
    insert_legacy(&app, 5).await;
    let sealer = app.sealer();
    // Before conversion a clear row is still found (and read) as it is.
    assert_eq!(
        find(&app, &sealer, field::EMAIL, "P3@example.com").await,
        ["old-3"]
    );

    let (ok, report) = reseal(&app, &[]);
    assert!(ok, "{report}");
    assert_eq!(report["leads"], 5, "{report}");
    assert_eq!(report["messages"], 5, "{report}");
    assert_eq!(report["unreadable"], 0);
    let sealed_under = |kid: &str| {
        format!(
            "select count(*) from leads where starts_with(email, 'sealed:v1:{kid}:')
               and starts_with(phone, 'sealed:v1:{kid}:') and starts_with(name, 'sealed:v1:{kid}:')
               and starts_with(username, 'sealed:v1:{kid}:')"
        )
    };
    assert_eq!(count(&app, &sealed_under("data")).await, 5);
    assert_eq!(
        count(
            &app,
            "select count(*) from lead_messages where starts_with(content, 'sealed:v1:data:')"
        )
        .await,
        5
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from leads where email like '%example.com%' or phone like '%7700%'"
        )
        .await,
        0,
        "nothing left in clear"
    );
    assert_eq!(
        find(&app, &sealer, field::EMAIL, "p3@example.com").await,
        ["old-3"]
    );
    let got: Value = app
        .get("/v1/leads/old-3", app.key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["email"], "p3@example.com");
    assert_eq!(got["name"], "Person 3");
    // A second pass finds nothing to do.
    let (ok, report) = reseal(&app, &[]);
    assert!(
        ok && report["leads"] == 0 && report["messages"] == 0,
        "{report}"
    );

    // Rotation: new data and index keys in front, the old ones kept to open what they made.
    let (d2, i2) = (Keyring::random("d2"), Keyring::random("i2"));
    let data = format!(
        "{},{}",
        d2.to_spec().expose(),
        app.settings.data_keys().to_spec().expose()
    );
    let index = format!(
        "{},{}",
        i2.to_spec().expose(),
        app.settings.pii_index_keys().to_spec().expose()
    );
    let (ok, report) = reseal(
        &app,
        &[
            ("LEADQ_DATA_KEYS", data.as_str()),
            ("LEADQ_PII_INDEX_KEYS", index.as_str()),
        ],
    );
    assert!(ok, "{report}");
    assert_eq!(
        (report["leads"].as_u64(), report["messages"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(count(&app, &sealed_under("d2")).await, 5);
    assert_eq!(
        count(
            &app,
            "select count(*) from leads where starts_with(email_index, 'i2:')"
        )
        .await,
        5
    );
    // The old keys can now go: the new ones alone open and find everything.
    let only_new = Sealer::new(d2, i2);
    assert_eq!(
        find(&app, &only_new, field::EMAIL, "p4@example.com").await,
        ["old-4"]
    );
    let email: String = sqlx::query_scalar("select email from leads where external_id = 'old-4'")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(
        only_new
            .open(app.tenant.tenant_id, field::EMAIL, &email)
            .unwrap(),
        "p4@example.com"
    );

    // A row sealed under a key no longer configured is left as it is and reported (exit 1).
    app.seal_email_under_lost_key("old-0").await;
    let rotated = [
        ("LEADQ_DATA_KEYS", data.as_str()),
        ("LEADQ_PII_INDEX_KEYS", index.as_str()),
    ];
    let (ok, report) = reseal(&app, &rotated);
    assert!(!ok, "a row that does not open fails the pass: {report}");
    assert_eq!(report["unreadable"], 1, "{report}");
    assert_eq!(report["leads"], 0, "{report}");
    let email: String = sqlx::query_scalar("select email from leads where external_id = 'old-0'")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert!(email.starts_with("sealed:v1:gone:"), "left as it was");
    app.stop().await;
}

/// A message a running job holds is skipped by the pass and reported: the pass is not
/// complete (exit 1), so its key is not dropped while that message still needs it. (Only
/// leads were counted: a pass that skipped a message exited 0.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_held_by_a_job_keeps_the_reseal_incomplete() {
    let app = spawn_app().await;
    insert_legacy(&app, 3).await;
    let mut held = app.own().await;
    sqlx::query("select 1 from lead_messages where source_id = 'm-1' for update")
        .execute(&mut *held)
        .await
        .unwrap();
    let (ok, report) = reseal(&app, &[]);
    assert!(
        !ok,
        "a pass that skipped a message is not complete: {report}"
    );
    assert_eq!(report["messages"], 2, "{report}");
    assert_eq!(report["skipped_locked"], 1, "{report}");
    held.rollback().await.unwrap();
    let (ok, report) = reseal(&app, &[]);
    assert!(ok, "{report}");
    assert_eq!(report["messages"], 1, "{report}");
    app.stop().await;
}

/// A phone with no digit to index (a row from before validation) is indexed as "nothing" under
/// the current key: the pass that converts it completes, and the next has nothing to do. (Its
/// index stayed NULL: every pass rewrote the row and counted it as left, so none completed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_with_nothing_to_index_does_not_keep_the_reseal_incomplete() {
    let app = spawn_app().await;
    insert_legacy(&app, 2).await;
    let mut tx = app.own().await;
    sqlx::query("update leads set phone = 'n/a', email = '  ' where external_id = 'old-1'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (ok, report) = reseal(&app, &[]);
    assert!(ok, "{report}");
    assert_eq!(report["leads"], 2, "{report}");
    let (ok, report) = reseal(&app, &[]);
    assert!(ok, "{report}");
    assert_eq!(report["leads"], 0, "nothing left to do: {report}");
    // It is found by nothing, and the indexable lead still by its phone.
    let sealer = Sealer::from_settings(&app.settings);
    assert!(find(&app, &sealer, "phone", "n/a").await.is_empty());
    assert_eq!(
        find(&app, &sealer, "phone", "+44 7700 900000").await,
        ["old-0"]
    );
    app.stop().await;
}

/// A data-key rotation re-seals the integration secrets too (the Chatwoot webhook secret, the
/// CRM credentials): once the old key is dropped, the new one alone opens them. (Only leads and
/// messages were re-sealed: after the documented rotation every webhook was refused and every
/// CRM call failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_reseals_the_integration_secrets_too() {
    use leadq_jobs::integrations::settings::{self, CrmSettings, TenantUpdate};
    let app = crate::webhooks::configured_app().await;
    app.configure(&TenantUpdate {
        crm: Some(CrmSettings {
            base_url: "http://127.0.0.1:9".into(),
            auth: crate::crm::token("pat-na1-12121212-3434"),
            id_property: None,
            batch_size: None,
        }),
        ..TenantUpdate::default()
    })
    .await;
    let d2 = Keyring::random("d2");
    let data = format!(
        "{},{}",
        d2.to_spec().expose(),
        app.settings.data_keys().to_spec().expose()
    );
    let (ok, report) = reseal(&app, &[("LEADQ_DATA_KEYS", data.as_str())]);
    assert!(ok, "{report}");
    assert_eq!(report["secrets"], 2, "{report}");
    // The old data key dropped: the new one alone opens both.
    let only_new = Sealer::new(d2, app.settings.pii_index_keys().clone());
    let hook = settings::webhook_tenant(&app.db.pool, &only_new, &app.tenant.slug)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hook.chatwoot.map(|(_, s)| s.expose().to_owned()).as_deref(),
        Some(crate::webhooks::SECRET)
    );
    let mut tx = app.own().await;
    let crm = settings::crm_connection(&mut tx, &only_new, app.tenant.tenant_id, false)
        .await
        .unwrap();
    assert!(crm.is_some());
    tx.rollback().await.unwrap();
    // A second pass finds nothing to do.
    let (ok, report) = reseal(&app, &[("LEADQ_DATA_KEYS", data.as_str())]);
    assert!(ok && report["secrets"] == 0, "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_erased_by_email_or_phone_wherever_the_value_is() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    for (id, email, phone) in [
        ("tg-1", "ada@example.com", "+44 7700 900001"),
        ("tg-2", "ADA@example.com", "+44 7700 900002"),
        ("tg-4", "eve@example.com", "+44 7700 900004"),
    ] {
        assert_eq!(
            app.post_lead(app.key(), &lead_with(id, email, phone))
                .await
                .status(),
            202
        );
    }
    scored(&app, 3).await;
    worker.stop().await;
    // Not stored yet: queued with no worker running.
    assert_eq!(
        app.post_lead(
            app.key(),
            &lead_with("tg-3", "ada@example.com", "+1 555 0100 200")
        )
        .await
        .status(),
        202
    );

    // Hostile and empty bodies: 422 with a field code, nothing erased.
    for (body, code) in [
        (json!({}), "required"),
        (
            json!({"email": "ada@example.com", "phone": "+44 7700 900004"}),
            "one_of_email_or_phone",
        ),
        (json!({"email": "not an address"}), "invalid_format"),
        (json!({"phone": "12"}), "invalid_format"),
    ] {
        let res = app.post_json("/v1/erasures", app.key(), &body).await;
        assert_eq!(res.status(), 422, "{body}");
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["error"]["details"][0]["code"], code, "{e}");
    }
    let res = app
        .post_json(
            "/v1/erasures",
            app.key(),
            &json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(res.status(), 404);

    let res = app
        .post_json(
            "/v1/erasures",
            app.key(),
            &json!({"email": " Ada@Example.com"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let erased: Value = res.json().await.unwrap();
    let mut ids: Vec<&str> = erased["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["external_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["tg-1", "tg-2"], "{erased}");
    assert_eq!(erased["leads"][0]["erased"]["lead_deleted"], true);
    assert_eq!(erased["jobs_removed"], 1, "tg-3's queued job: {erased}");
    assert_eq!(app.queue.counts("lead_score").await.unwrap().pending, 0);
    for id in ["tg-1", "tg-2", "tg-3"] {
        assert_eq!(
            app.get(&format!("/v1/leads/{id}"), app.key())
                .await
                .status(),
            404
        );
    }
    assert_eq!(app.get("/v1/leads/tg-4", app.key()).await.status(), 200);

    // The operator CLI, by phone in another spelling.
    let slug = app.tenant.slug.as_str();
    let out = crate::leadq_ok(
        &app,
        &["lead", "erase", slug, "--phone", "+447700900004"],
        &[],
    );
    let erased: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(erased["leads"][0]["external_id"], "tg-4");
    assert_eq!(app.get("/v1/leads/tg-4", app.key()).await.status(), 404);

    // Audited by field and counts, never the value.
    let details: Vec<Value> = sqlx::query_scalar(
        "select details from audit_log where action = 'lead.erase_by_contact' order by id",
    )
    .fetch_all(&mut *app.own().await)
    .await
    .unwrap();
    // The request that found nothing is on record too.
    assert_eq!(details.len(), 3);
    assert_eq!(
        (&details[0]["by"], &details[0]["leads"]),
        (&json!("email"), &json!(0))
    );
    assert_eq!(
        (&details[1]["by"], &details[1]["leads"]),
        (&json!("email"), &json!(2))
    );
    assert_eq!(
        (&details[2]["by"], &details[2]["leads"]),
        (&json!("phone"), &json!(1))
    );
    assert!(!details
        .iter()
        .any(|d| d.to_string().contains("example.com") || d.to_string().contains("7700")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_replaces_personal_fields_with_stable_tokens() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    for (id, email) in [
        ("tg-1", "ada@example.com"),
        ("tg-2", "Ada@Example.com"),
        ("tg-3", "eve@example.com"),
    ] {
        let mut l = lead_with(id, email, "+44 7700 900123");
        l["answers"]["need"] = json!("=HYPERLINK(\"http://evil\")");
        assert_eq!(app.post_lead(app.key(), &l).await.status(), 202);
    }
    scored(&app, 3).await;
    worker.stop().await;

    let slug = app.tenant.slug.as_str();
    let export = || {
        let args = ["lead", "export", "--tenant", slug, "--format", "csv"];
        let out = crate::leadq_ok(&app, &args, &[]);
        let summary: Value = serde_json::from_slice(&out.stderr).unwrap();
        assert_eq!(summary, json!({"rows": 3, "unreadable": 0}));
        String::from_utf8(out.stdout).unwrap()
    };
    let csv = export();
    assert_eq!(csv, export(), "tokens are stable");
    // The tokens are random hex and may spell "ada" by chance: look in every other field.
    let fields: Vec<&str> = csv
        .split([',', '\r', '\n'])
        .filter(|f| !f.starts_with("tok_"))
        .collect();
    for personal in [
        "ada",
        "Ada",
        "eve",
        "7700 900123",
        "447700900123",
        "Lovelace",
        "tg-1",
        "tg-2",
        "tg-3",
    ] {
        assert!(
            !fields.iter().any(|f| f.contains(personal)),
            "{personal} in the export:\n{csv}"
        );
    }
    let rows: Vec<Vec<&str>> = csv
        .trim_end()
        .split("\r\n")
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        &rows[0][..9],
        [
            "lead",
            "source",
            "campaign",
            "score",
            "tier",
            "version",
            "email_token",
            "phone_token",
            "has_name"
        ]
    );
    let col = |name: &str| rows[0].iter().position(|h| *h == name).unwrap();
    let (email, phone) = (col("email_token"), col("phone_token"));
    assert_eq!(rows.len(), 4);
    // Each lead's row, by the token of its external id.
    let sealer = app.sealer();
    let row = |id: &str| {
        let t = sealer.token(app.tenant.tenant_id, "external_id", id);
        rows.iter()
            .find(|r| r[col("lead")] == t)
            .unwrap_or_else(|| panic!("{id}'s row:\n{csv}"))
    };
    assert_eq!(
        row("tg-1")[email],
        row("tg-2")[email],
        "one person, one token"
    );
    assert_ne!(row("tg-1")[email], row("tg-3")[email]);
    assert_eq!(
        row("tg-1")[email],
        sealer.token(app.tenant.tenant_id, field::EMAIL, "ada@example.com")
    );
    assert!(row("tg-1")[phone].starts_with("tok_"));
    assert_eq!(row("tg-1")[col("budget")], "50k+");
    assert!(
        csv.contains("\"'=HYPERLINK(\"\"http://evil\"\")\""),
        "a formula is defused:\n{csv}"
    );
    let n = count(
        &app,
        "select count(*) from audit_log where action = 'lead.export'",
    )
    .await;
    assert_eq!(n, 2);
    app.stop().await;
}

/// An export is audited before any row leaves: one whose reader goes away half-way (a closed
/// pipe) has still said who took the tenant's leads. (Audited at the end only, it left no
/// entry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cut_short_is_audited_all_the_same() {
    use std::io::Read as _;
    let app = spawn_app().await;
    let mut tx = app.own().await;
    sqlx::query(
        "insert into leads (tenant_id, external_id, source, name)
         select $1, 'tg-many-' || g, 'telegram', 'Person ' || g from generate_series(1, 5000) g",
    )
    .bind(app.tenant.tenant_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut child = crate::leadq_cmd(&app)
        .args([
            "lead",
            "export",
            "--tenant",
            &app.tenant.slug,
            "--operator",
            "eve",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader is gone: the export's next writes fail.
    let status = child.wait().unwrap();
    assert!(!status.success(), "the export could not finish");
    let actors: Vec<String> =
        sqlx::query_scalar("select actor from audit_log where action = 'lead.export'")
            .fetch_all(&mut *app.own().await)
            .await
            .unwrap();
    assert_eq!(actors, ["operator:eve"]);
    app.stop().await;
}
