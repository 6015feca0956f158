//! TLS to Redis and PostgreSQL, and HTTPS on the API listener, against real servers that
//! speak nothing but TLS (see [`servers`]).

mod servers;

use std::time::{Duration, Instant};

use leadq_platform::config::{Pem, RedisTls};
use leadq_platform::secret::Secret;
use leadq_queue::Queue;
use leadq_testkit::{sample_lead, signer, spawn_app_in, spawn_app_with, wait_for, TestDb};
use serde_json::Value;

use servers::{Servers, PG_PASSWORD};

/// Start-up must fail well before this (the stores' own bounds are 5 s and 10 s).
const FAIL_FAST: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_is_scored_over_tls_to_both_stores_with_client_certificates() {
    let Some(s) = Servers::shared() else { return };
    // The test's own database, reached through the URL's parameters (sslrootcert, sslcert...).
    let db = TestDb::on(&s.pg_url(&s.pki.ca)).await;
    // The API and the worker reach it through LEADQ_PG_*_FILE instead, sslmode defaulting to
    // verify-full, and refuse any plain URL.
    let bare = db.url.split('?').next().unwrap().to_owned();
    let mut env = s.redis_env();
    env.extend([
        ("DATABASE_URL", bare),
        ("LEADQ_PG_CA_FILE", s.pki.ca.display().to_string()),
        (
            "LEADQ_PG_CLIENT_CERT_FILE",
            s.pki.client.cert.display().to_string(),
        ),
        (
            "LEADQ_PG_CLIENT_KEY_FILE",
            s.pki.client.key.display().to_string(),
        ),
        ("LEADQ_REQUIRE_TLS", "true".into()),
    ]);
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_in(db, &extra).await;
    assert!(app
        .settings
        .database_url()
        .expose()
        .ends_with("&sslmode=verify-full"));
    let worker = app.spawn_worker().await;

    let res = app.post_lead(app.key(), &sample_lead("tg-tls-1")).await;
    assert_eq!(res.status(), 202);
    let lead: Value = wait_for("the lead to be scored", Duration::from_secs(30), || async {
        let res = app.get("/v1/leads/tg-tls-1", app.key()).await;
        let v: Value = res.json().await.ok()?;
        v["score"].is_number().then_some(v)
    })
    .await;
    assert_eq!(lead["score"], 95);

    // Both stores really are TLS: the server says so for this very session.
    let (ssl,): (bool,) =
        sqlx::query_as("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(ssl);
    assert_eq!(app.queue.counts("lead_score").await.unwrap().pending, 0);
    worker.stop().await;
    app.stop().await;
}

fn redis_tls(ca: &std::path::Path, client: Option<&servers::Pair>) -> RedisTls {
    let pem = |p: &std::path::Path| Pem {
        path: p.to_owned(),
        bytes: std::fs::read(p).unwrap(),
    };
    RedisTls {
        ca: Some(pem(ca)),
        client: client.map(|c| (pem(&c.cert), pem(&c.key))),
    }
}

/// Connects a queue to `url` with `tls`; the error's full chain as `leadq` prints it.
async fn queue_error(url: &str, tls: RedisTls) -> String {
    let mut settings = leadq_testkit::settings("postgres://unused/x", "tlsx", &[]);
    settings.queue.redis_tls = tls;
    let started = Instant::now();
    let err = Queue::connect(&Secret::new(url), settings.queue.clone(), signer(&settings))
        .await
        .expect_err("the connection must be refused");
    assert!(
        started.elapsed() < FAIL_FAST,
        "took {:?}",
        started.elapsed()
    );
    format!("{:#}", anyhow::Error::from(err))
}

async fn pg_error(url: &str) -> String {
    let started = Instant::now();
    let err = leadq_platform::db::connect(&Secret::new(url), 1)
        .await
        .expect_err("the connection must be refused");
    assert!(
        started.elapsed() < FAIL_FAST,
        "took {:?}",
        started.elapsed()
    );
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(!text.contains(PG_PASSWORD), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_and_clients_trusting_the_wrong_ca_are_refused_with_one_clear_message() {
    let Some(s) = Servers::shared() else { return };
    let pki = &s.pki;

    // A plain client: Redis drops it, PostgreSQL has no pg_hba entry without encryption.
    let plain = format!("redis://127.0.0.1:{}/", s.redis.port);
    queue_error(&plain, RedisTls::default()).await;
    let text = pg_error(&format!("{}?sslmode=disable", s.pg.bare_url())).await;
    assert!(text.contains("no encryption"), "{text}");

    // Trusting the wrong CA.
    let text = queue_error(&s.redis.url(), redis_tls(&pki.wrong_ca, Some(&pki.client))).await;
    assert_eq!(
        text,
        "could not connect to Redis over TLS: the server's certificate is not signed by a \
         trusted CA (check LEADQ_REDIS_CA_FILE)"
    );
    let text = pg_error(&s.pg_url(&pki.wrong_ca)).await;
    assert_eq!(
        text,
        "could not connect to PostgreSQL over TLS: the server's certificate is not signed by a \
         trusted CA (check LEADQ_PG_CA_FILE or the URL's sslrootcert)"
    );

    // No client certificate where the server asks for one.
    let text = queue_error(&s.redis.url(), redis_tls(&pki.ca, None)).await;
    assert!(text.starts_with("could not connect to Redis"), "{text}");

    // An expired certificate, and one for another host.
    let expired = servers::TlsRedis::start(&pki.dir, &pki.expired, &pki.ca, false);
    let text = queue_error(&expired.url(), redis_tls(&pki.ca, None)).await;
    assert_eq!(
        text,
        "could not connect to Redis over TLS: the server's certificate has expired (or is not \
         yet valid)"
    );
    let elsewhere = servers::TlsRedis::start(&pki.dir, &pki.wrong_host, &pki.ca, false);
    let text = queue_error(&elsewhere.url(), redis_tls(&pki.ca, None)).await;
    assert_eq!(
        text,
        "could not connect to Redis over TLS: the server's certificate is not valid for the host \
         name in the URL"
    );

    // The real binary: exit 1 with one clear line, no password.
    let app = spawn_app_with(&[]).await;
    let out = crate::leadq_cmd(&app)
        .arg("worker")
        .env("DATABASE_URL", s.pg_url(&pki.wrong_ca))
        .env("LEADQ_WORKER_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains(PG_PASSWORD), "{stderr}");
    // The JSON log line carries the same error; the last line is the human one.
    assert_eq!(
        stderr.trim().lines().last().unwrap(),
        "leadq: Failed to connect to PostgreSQL: could not connect to PostgreSQL over TLS: the \
         server's certificate is not signed by a trusted CA (check LEADQ_PG_CA_FILE or the URL's \
         sslrootcert)"
    );
    app.stop().await;
}

#[test]
fn require_tls_refuses_plain_urls_naming_the_setting() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadq"))
        .arg("worker")
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("postgres://leadq:{PG_PASSWORD}@db/leadq"),
        )
        .env("REDIS_URL", "redis://cache:6379/")
        .env("LEADQ_REQUIRE_TLS", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in [
        "REDIS_URL is a plain redis:// URL but LEADQ_REQUIRE_TLS=true; use rediss://",
        "DATABASE_URL has sslmode=prefer but LEADQ_REQUIRE_TLS=true",
        "LEADQ_SIGNING_KEYS is required",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from {stderr}");
    }
    assert!(!stderr.contains(PG_PASSWORD), "{stderr}");
}

mod api;
mod bench;
