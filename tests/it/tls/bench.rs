//! The cost of TLS on the end-to-end lead path: `POST /v1/leads` → `lead_score` run by a
//! worker → scored in PostgreSQL, with both stores reached over plain TCP, then over TLS
//! (client certificates, `verify-full`), on the same private servers (one redis-server serving
//! both ports, one PostgreSQL accepting both), alternating, in one run. The API listener is
//! plain HTTP in both, so only the store connections differ.
//!
//! Ignored by default; `scripts/bench-tls` runs it in a release build and prints the medians.
//! `LEADQ_TLS_BENCH_LEADS` (default 2000) leads per round, `LEADQ_TLS_BENCH_ROUNDS` (default 3)
//! rounds of each.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use leadq_testkit::{sample_lead, spawn_app_in, wait_for, TestApp, TestDb};
use serde_json::json;

use super::servers::{free_port, Pki, TlsPostgres, TlsRedis};

#[allow(clippy::disallowed_methods)]
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Posts `n` leads (32 in flight) and waits until the worker has scored them all; leads/s.
async fn round(app: &TestApp, n: usize, tag: &str) -> f64 {
    let completed = || async {
        let (done,): (i64,) = sqlx::query_as(
            "select count(*) from job_runs where status = 'completed' and kind = 'lead_score'",
        )
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
        done as usize
    };
    let before = completed().await;
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| async move {
            let mut lead = sample_lead(&format!("{tag}-{i}"));
            lead["message_id"] = json!(format!("m-{tag}-{i}"));
            let res = app.post_lead(app.key(), &lead).await;
            assert_eq!(res.status(), 202);
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    wait_for("every lead scored", Duration::from_secs(600), || async {
        (completed().await >= before + n).then_some(())
    })
    .await;
    n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: scripts/bench-tls"]
async fn tls_cost_on_the_lead_path() {
    let (n, rounds) = (
        knob("LEADQ_TLS_BENCH_LEADS", 2000),
        knob("LEADQ_TLS_BENCH_ROUNDS", 3),
    );
    let pki = Pki::new();
    let plain_port = free_port();
    let redis = TlsRedis::start_with(&pki.dir, &pki.server, &pki.ca, true, plain_port);
    let pg = TlsPostgres::start_with(&pki, true);
    let c = &pki.client;
    let tls_env = |db: &str| {
        vec![
            ("DATABASE_URL", format!("{db}?sslmode=verify-full")),
            ("LEADQ_PG_CA_FILE", pki.ca.display().to_string()),
            ("LEADQ_PG_CLIENT_CERT_FILE", c.cert.display().to_string()),
            ("LEADQ_PG_CLIENT_KEY_FILE", c.key.display().to_string()),
            ("REDIS_URL", redis.url()),
            ("LEADQ_REDIS_CA_FILE", pki.ca.display().to_string()),
            ("LEADQ_REDIS_CLIENT_CERT_FILE", c.cert.display().to_string()),
            ("LEADQ_REDIS_CLIENT_KEY_FILE", c.key.display().to_string()),
            ("LEADQ_LOG", "error".into()),
        ]
    };
    let plain_env = |db: &str| {
        vec![
            ("DATABASE_URL", format!("{db}?sslmode=disable")),
            ("REDIS_URL", format!("redis://127.0.0.1:{plain_port}/")),
            ("LEADQ_LOG", "error".into()),
        ]
    };
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        for secure in [false, true] {
            // A fresh database and app per round, so every round starts from empty tables.
            let db = TestDb::on(&format!("{}?sslmode=disable", pg.bare_url())).await;
            let bare = db.url.split('?').next().unwrap().to_owned();
            let env = if secure {
                tls_env(&bare)
            } else {
                plain_env(&bare)
            };
            let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let app = spawn_app_in(db, &extra).await;
            // Measure the path, not the tenant's ingest limit.
            let mut tx = app.own().await;
            sqlx::query(
                "insert into tenant_limits (tenant_id, ingest_per_second, ingest_burst, \
                 leads_per_day) values ($1, 1000000, 1000000, 100000000)",
            )
            .bind(app.tenant.tenant_id)
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
            let worker = app.spawn_worker().await;
            round(&app, 50, "warm").await;
            let rate = round(&app, n, &format!("r{r}")).await;
            let label = if secure { "tls" } else { "plain" };
            println!("round {r} {label}: {rate:.0} leads/s");
            if secure { &mut tls } else { &mut plain }.push(rate);
            worker.stop().await;
            app.stop().await;
        }
    }
    let (p, t) = (median(plain), median(tls));
    println!(
        "lead path, {n} leads x {rounds} rounds: plain {p:.0} leads/s, TLS {t:.0} leads/s \
         (median; TLS/plain = {:.2})",
        t / p
    );
}
