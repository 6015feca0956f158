//! Tenant context on every signal where a tenant is involved: per-tenant request counters under
//! the bounded `tenant` label (never past the cap, never a raw request value), and the info
//! gauges of each tenant's special settings.

use leadq_jobs::ops::overrides::Publisher;
use leadq_testkit::{sample_lead, spawn_app_with, TestApp};

fn lines_of<'a>(metrics: &'a str, name: &str) -> Vec<&'a str> {
    metrics.lines().filter(|l| l.starts_with(name)).collect()
}

async fn metrics(app: &TestApp) -> String {
    app.text(&format!("{}/metrics", app.address)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_label_stays_within_the_cap_and_never_carries_a_request_value() {
    // Two tenants get their own label (the first created, before the API starts, so its label
    // map holds both whenever it first loads); the app's own tenant and a fourth are `other`.
    let db = leadq_testkit::TestDb::new().await;
    let mut made = Vec::new();
    for n in ["a", "b"] {
        let slug = format!("{n}-{}", &leadq_testkit::queue_prefix()[1..]);
        made.push(
            leadq_platform::tenant::create(&db.pool, &slug, "test")
                .await
                .unwrap(),
        );
    }
    let app = leadq_testkit::spawn_app_in(db, &[("LEADQ_METRICS_TENANT_CAP", "2")]).await;
    let (first, second) = (made.remove(0), made.remove(0));
    let third = &app.tenant;
    let fourth = app.other_tenant().await;
    for (key, id) in [
        (first.api_key.expose(), "raw-external-id-1"),
        (second.api_key.expose(), "raw-external-id-2"),
        (third.api_key.expose(), "raw-external-id-3"),
        (fourth.api_key.expose(), "raw-external-id-4"),
    ] {
        assert_eq!(app.post_lead(key, &sample_lead(id)).await.status(), 202);
        assert_eq!(app.get(&format!("/v1/leads/{id}"), key).await.status(), 404);
    }
    // A webhook for a slug that does not exist names no tenant at all.
    let res = app
        .post_raw(
            "/v1/webhooks/chatwoot/no-such-tenant-raw",
            &[],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(res.status(), 404);

    let text = metrics(&app).await;
    let ours: Vec<&str> = lines_of(&text, "leadq_tenant_http_requests_total")
        .into_iter()
        .filter(|l| {
            [&first.slug, &second.slug, &third.slug, &fourth.slug]
                .iter()
                .any(|s| l.contains(&format!("tenant=\"{s}\"")))
        })
        .collect();
    assert!(
        ours.iter().any(|l| l.contains(&first.slug)
            && l.contains(r#"route="/v1/leads""#)
            && l.contains(r#"status_class="2xx""#)),
        "{ours:#?}"
    );
    assert!(ours.iter().any(|l| l.contains(&second.slug)
        && l.contains(r#"route="/v1/leads/{external_id}""#)
        && l.contains(r#"status_class="4xx""#)));
    for beyond in [&third.slug, &fourth.slug] {
        assert!(
            !text.contains(beyond.as_str()),
            "{beyond} has a label of its own"
        );
    }
    assert!(text.contains(r#"leadq_tenant_http_requests_total{tenant="other""#));
    for raw in ["raw-external-id", "no-such-tenant-raw"] {
        assert!(
            !text.contains(raw),
            "a request value ({raw}) became a label"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_special_settings_show_as_info_gauges_and_drop_to_zero_when_undone() {
    let app = spawn_app_with(&[]).await;
    let labels = leadq_jobs::tenant_labels::TenantLabels::new(app.db.pool.clone(), 50, None);
    let publisher = Publisher::default();
    let mut tx = app.own().await;
    sqlx::query(
        "insert into tenant_limits (tenant_id, ingest_per_second, ingest_burst, leads_per_day)
         values ($1, 5, 10, 1000)",
    )
    .bind(app.tenant.tenant_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into tenant_job_kinds (tenant_id, kind, mode) values ($1, 'crm_sync', 'shadow')",
    )
    .bind(app.tenant.tenant_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.queue
        .pause_tenant("lead_score", app.tenant.tenant_id)
        .await
        .unwrap();
    publisher
        .refresh(&app.db.pool, &app.queue, &labels)
        .await
        .unwrap();
    let text = metrics(&app).await;
    let slug = &app.tenant.slug;
    for setting in ["limits", "kind_mode:crm_sync=shadow", "paused:lead_score"] {
        let line =
            format!(r#"leadq_tenant_override_info{{tenant="{slug}",setting="{setting}"}} 1"#);
        let alt = format!(r#"leadq_tenant_override_info{{setting="{setting}",tenant="{slug}"}} 1"#);
        assert!(
            text.contains(&line) || text.contains(&alt),
            "no {setting} in {text}"
        );
    }
    app.queue
        .resume_tenant("lead_score", app.tenant.tenant_id)
        .await
        .unwrap();
    publisher
        .refresh(&app.db.pool, &app.queue, &labels)
        .await
        .unwrap();
    let text = metrics(&app).await;
    assert!(
        text.contains(&format!(
            r#"leadq_tenant_override_info{{setting="paused:lead_score",tenant="{slug}"}} 0"#
        )) || text.contains(&format!(
            r#"leadq_tenant_override_info{{tenant="{slug}",setting="paused:lead_score"}} 0"#
        )),
        "a resumed kind still shows as paused"
    );
    app.stop().await;
}
