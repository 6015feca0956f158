//! Billing reconciliation: a signed baseline of each tenant's limits and entitlements; changes
//! made the audited way are expected, changes made around them are findings (audited,
//! published for the alert, listed by `leadq billing reconcile` with exit 1), and an edited
//! baseline is caught by its signature.

use std::time::Duration;

use leadq_testkit::{spawn_app_with, wait_for, TestApp};
use serde_json::Value;

/// `leadq billing <args>` as operator `billing-bot`: (exit code, stdout lines as JSON).
fn billing(app: &TestApp, args: &[&str]) -> (i32, Vec<Value>) {
    let out = crate::leadq_cmd(app)
        .arg("billing")
        .args(args)
        .env(
            "LEADQ_AUDIT_KEYS",
            app.settings.audit_keys().to_spec().expose(),
        )
        .env("LEADQ_OPERATOR", "billing-bot")
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

/// Runs `sql` as the table owner in the test tenant's scope: someone going around the
/// audited paths.
async fn as_owner(app: &TestApp, sql: &str) {
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
    sqlx::query(sql).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_outside_the_audited_paths_are_found_and_audited_ones_are_not() {
    // The reconciliation fires every second here (hourly by default).
    let app = spawn_app_with(&[("LEADQ_SCHEDULE_BILLING_RECONCILE", "* * * * * *")]).await;
    app.db.register_operator("billing-bot", &["limits"]).await;
    let slug = app.tenant.slug.clone();
    let worker = app.spawn_worker().await;

    // A baseline, then nothing changed: nothing found.
    let (rc, lines) = billing(
        &app,
        &["baseline", "--tenant", &slug, "--reason", "contract 2026"],
    );
    assert_eq!(rc, 0, "{lines:?}");
    assert_eq!(lines[0]["config"]["limits"]["leads_per_day"], 100_000);
    let (rc, lines) = billing(&app, &["reconcile", "--tenant", &slug]);
    assert_eq!((rc, lines.len()), (0, 1), "{lines:?}");
    assert_eq!(lines[0]["findings"], 0);

    // Changed the audited ways (the update_billing_limit job; `tenant set-kind`): expected.
    let set = crate::leadq_cmd(&app)
        .args([
            "tenant",
            "set-limits",
            &slug,
            "--per-second",
            "7",
            "--burst",
            "9",
        ])
        .args(["--leads-per-day", "500"])
        .env(
            "LEADQ_DATA_KEYS",
            app.settings.data_keys().to_spec().expose(),
        )
        .env("LEADQ_OPERATOR", "billing-bot")
        .status()
        .unwrap();
    assert!(set.success());
    wait_for("the new limits", Duration::from_secs(20), || async {
        let l = leadq_jobs::ops::limits::get(&app.db.pool, app.tenant.tenant_id)
            .await
            .unwrap();
        (l.leads_per_day == 500).then_some(())
    })
    .await;
    leadq_platform::tenant::set_kind_mode(
        &app.db.pool,
        "operator:billing-bot",
        &slug,
        "crm_sync",
        "shadow",
    )
    .await
    .unwrap();
    let (rc, lines) = billing(&app, &["reconcile", "--tenant", &slug]);
    assert_eq!(
        (rc, lines.len()),
        (0, 1),
        "audited changes are expected: {lines:?}"
    );

    // Changed around them, as the table owner: two findings, exit 1.
    as_owner(
        &app,
        &format!(
            "update tenant_limits set leads_per_day = 999999 where tenant_id = '{}'",
            app.tenant.tenant_id
        ),
    )
    .await;
    as_owner(
        &app,
        &format!(
            "insert into tenant_job_kinds (tenant_id, kind, mode) values ('{}', 'lead_score', 'disabled')",
            app.tenant.tenant_id
        ),
    )
    .await;
    let (rc, lines) = billing(&app, &["reconcile", "--tenant", &slug]);
    assert_eq!(rc, 1, "{lines:?}");
    let findings: Vec<(&str, &str)> = lines[..lines.len() - 1]
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        findings,
        [
            ("limits", "limits_drift"),
            ("lead_score", "entitlement_drift")
        ]
    );
    assert_eq!(lines[0]["expected"]["leads_per_day"], 500);
    assert_eq!(lines[0]["actual"]["leads_per_day"], 999_999);
    assert_eq!(lines[1]["expected"], "enabled");

    // The scheduled reconciliation finds them too: audited, and published for the alert. (Both
    // gauges: a scheduled pass that ran between the two changes above published only the
    // first; the next one publishes both.)
    wait_for(
        "the discrepancy gauges",
        Duration::from_secs(20),
        || async {
            let m = app.text(&format!("http://{}/metrics", worker.health)).await;
            ["limits", "lead_score"]
                .iter()
                .all(|kind| {
                    m.contains(&format!(
                        "leadq_billing_discrepancies{{tenant=\"{slug}\",kind=\"{kind}\"}} 1"
                    ))
                })
                .then_some(())
        },
    )
    .await;
    let audited: Vec<(String, String)> =
        sqlx::query_as("select actor, outcome from audit_log where action = 'billing.discrepancy'")
            .fetch_all(&mut *app.own().await)
            .await
            .unwrap();
    assert!(audited.contains(&("operator:billing-bot".into(), "limits_drift".into())));
    assert!(audited.contains(&(
        "system:billing_reconcile".into(),
        "entitlement_drift".into()
    )));
    // A worker that stops leading the scheduler (here: stops) withdraws the counts only the
    // leader keeps current. A former leader kept exporting them beside the new leader's, and
    // the alert, which sums them, stayed on after the fix.
    worker.stop().await;
    let m = app.text(&format!("{}/metrics", app.address)).await;
    for kind in ["limits", "lead_score"] {
        let series = format!("leadq_billing_discrepancies{{tenant=\"{slug}\",kind=\"{kind}\"}} 0");
        assert!(m.contains(&series), "{series} not in {m}");
    }

    // A new baseline accepts the live values (with a reason); then an edited baseline is
    // caught by its signature.
    let (rc, _) = billing(
        &app,
        &["baseline", "--tenant", &slug, "--reason", "agreed uplift"],
    );
    assert_eq!(rc, 0);
    let (rc, lines) = billing(&app, &["reconcile", "--tenant", &slug]);
    assert_eq!((rc, lines.len()), (0, 1), "{lines:?}");
    as_owner(
        &app,
        "update billing_baselines set config = jsonb_set(config, '{limits,leads_per_day}', '5')
          where id = (select max(id) from billing_baselines)",
    )
    .await;
    let (rc, lines) = billing(&app, &["reconcile", "--tenant", &slug]);
    assert_eq!(rc, 1);
    assert_eq!(
        (lines[0]["kind"].as_str(), lines[0]["code"].as_str()),
        (Some("baseline"), Some("baseline_tampered"))
    );

    // The runtime role cannot rewrite a baseline at all.
    let refused = sqlx::query("delete from billing_baselines")
        .execute(&mut *app.own().await)
        .await;
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("permission denied"));

    app.stop().await;
}

/// A baseline is taken at the database's time, not the host's: a host whose clock ran an hour
/// ahead stamped its baseline in the future, so an audited change made in that hour was not
/// replayed onto it, and the next reconciliation reported the change as drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_taken_on_a_host_with_a_fast_clock_takes_the_databases_time() {
    let app = spawn_app_with(&[]).await;
    app.db.register_operator("billing-bot", &["limits"]).await;
    let slug = app.tenant.slug.clone();
    let cmd = crate::leadq_cmd(&app);
    let mut skewed = std::process::Command::new("faketime");
    skewed
        .args(["-f", "+1h"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => skewed.env(k, v),
            None => skewed.env_remove(k),
        };
    }
    let out = skewed
        .args([
            "billing",
            "baseline",
            "--tenant",
            &slug,
            "--reason",
            "contract 2026",
        ])
        .env(
            "LEADQ_AUDIT_KEYS",
            app.settings.audit_keys().to_spec().expose(),
        )
        .env("LEADQ_OPERATOR", "billing-bot")
        .output()
        .expect("faketime is installed by scripts/test");
    assert!(out.status.success(), "{out:?}");
    // An audited change, just after the baseline by the database's clock.
    leadq_platform::tenant::set_kind_mode(
        &app.db.pool,
        "operator:billing-bot",
        &slug,
        "crm_sync",
        "shadow",
    )
    .await
    .unwrap();
    let (rc, lines) = billing(&app, &["reconcile", "--tenant", &slug]);
    assert_eq!(
        (rc, lines.len()),
        (0, 1),
        "an audited change is expected: {lines:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_accepted_but_never_recorded_is_a_usage_gap() {
    let app = spawn_app_with(&[]).await;
    let slug = app.tenant.slug.clone();
    let today = chrono::Utc::now().date_naive().to_string();
    let worker = app.spawn_worker().await;
    for i in 0..3 {
        let lead = leadq_testkit::sample_lead(&format!("tg-usage-{i}"));
        assert_eq!(app.post_lead(app.key(), &lead).await.status(), 202);
    }
    // A duplicate is not usage.
    let mut again = leadq_testkit::sample_lead("tg-usage-0");
    again["message_id"] = serde_json::json!("usage-dup");
    assert_eq!(app.post_lead(app.key(), &again).await.status(), 202);
    assert_eq!(app.post_lead(app.key(), &again).await.status(), 202);
    let recorded = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from job_runs where kind = 'lead_score' and status = 'completed'",
        )
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap()
    };
    wait_for("four runs recorded", Duration::from_secs(20), || async {
        (recorded().await == 4).then_some(())
    })
    .await;
    let (rc, lines) = billing(&app, &["reconcile", "--tenant", &slug, "--day", &today]);
    assert_eq!((rc, lines.len()), (0, 1), "{lines:?}");
    assert_eq!(lines[0]["without_baseline"][0], slug.as_str());

    // One run's record lost (a job acknowledged in Redis, never stored in PostgreSQL).
    as_owner(
        &app,
        "delete from job_runs where job_id = (select job_id from job_runs limit 1)",
    )
    .await;
    let (rc, lines) = billing(&app, &["reconcile", "--tenant", &slug, "--day", &today]);
    assert_eq!(rc, 1, "{lines:?}");
    assert_eq!(lines[0]["code"], "usage_gap");
    assert_eq!(lines[0]["kind"], "lead_score");
    assert_eq!(lines[0]["expected"]["accepted"], 4);
    assert_eq!(lines[0]["actual"]["recorded"], 3);
    worker.stop().await;
    app.stop().await;
}
