//! Planted secrets never reach a log line, an error body or a Sentry event.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use leadq_queue::envelope::{Envelope, SCHEMA_VERSION};
use leadq_queue::NewJob;
use leadq_testkit::{spawn_app, wait_for, TestApp};

const DSN_PASSWORD: &str = "Pl4nt3dPassw0rd";
const BEARER: &str = "pl4ntedT0kenValue123";
const EMAIL: &str = "planted.person@example.org";
const PHONE: &str = "+1 415 555 0199";

fn planted_key() -> String {
    format!("lq_{}_{}", "c0ffee".repeat(2), "5ec2e7".repeat(10) + "beef")
}

/// A stand-in for Sentry's ingestion endpoint: records every request body.
pub(crate) async fn fake_sentry() -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let store = store.clone();
        async move {
            store
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            axum::Json(serde_json::json!({"id": "00000000000000000000000000000000"}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `leadq <role>` reporting to the fake Sentry on `sentry`, logging to `log`, with `env` on
/// top of the test app's environment.
pub(crate) fn start(
    app: &TestApp,
    role: &str,
    addr_var: &str,
    port: u16,
    sentry: u16,
    log: &std::path::Path,
    env: &[(&str, String)],
) -> Child {
    crate::leadq_cmd(app)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg(role)
        .env(
            "LEADQ_DATA_KEYS",
            app.settings.data_keys().to_spec().expose(),
        )
        .env(addr_var, format!("127.0.0.1:{port}"))
        .env("LEADQ_WORKER_ADDR", format!("127.0.0.1:{}", free_port()))
        .env(
            "SENTRY_DSN",
            format!("http://0123456789abcdef0123456789abcdef@127.0.0.1:{sentry}/1"),
        )
        .env("LEADQ_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_appear_in_no_log_line_error_body_sentry_event_or_exported_span() {
    let app = spawn_app().await;
    let (sentry_port, sentry) = fake_sentry().await;
    // A stand-in OTLP/HTTP receiver: the spans both processes export (protobuf keeps strings
    // as they are, so a secret would be found in the bodies' text).
    let (otlp_port, otlp) = fake_sentry().await;
    let otel = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp_port}"),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ];
    let dir = std::env::temp_dir().join(format!("leadq-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (api_log, worker_log) = (dir.join("api.log"), dir.join("worker.log"));
    let api_port = free_port();
    let mut api = start(
        &app,
        "api",
        "LEADQ_API_ADDR",
        api_port,
        sentry_port,
        &api_log,
        &otel,
    );
    let mut worker = start(
        &app,
        "worker",
        "LEADQ_API_ADDR",
        free_port(),
        sentry_port,
        &worker_log,
        &otel,
    );
    let base = format!("http://127.0.0.1:{api_port}");
    let client = reqwest::Client::new();
    wait_for("the API", Duration::from_secs(20), || {
        let c = client.clone();
        let url = format!("{base}/readyz");
        async move { c.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;

    let dsn = format!("postgres://admin:{DSN_PASSWORD}@db.internal:5432/leadq");
    let mut bodies = Vec::new();
    // Failing requests carrying the secrets in every place a client controls.
    let requests = vec![
        client.post(format!("{base}/v1/leads")).bearer_auth(planted_key()).json(&serde_json::json!({})),
        client.post(format!("{base}/v1/leads")).header("authorization", format!("Bearer {BEARER}")),
        client
            .post(format!("{base}/v1/leads"))
            .bearer_auth(app.key())
            .header("x-correlation-id", planted_key())
            .header("content-type", "application/json")
            .body(format!(r#"{{"external_id":"x","email":"{EMAIL}","phone":"{PHONE}","note":"{dsn}"#)),
        client
            .post(format!("{base}/v1/leads"))
            .bearer_auth(app.key())
            .json(&serde_json::json!({"external_id": "x", "source": "telegram", "email": dsn, "phone": BEARER})),
        client.get(format!("{base}/v1/leads/{EMAIL}")).bearer_auth(app.key()),
    ];
    for req in requests {
        let res = req.send().await.unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
        let headers = format!("{:?}", res.headers());
        bodies.push(headers + &res.text().await.unwrap());
    }

    // Failing jobs carrying them: a principal and ids a compromised producer might send.
    app.queue
        .enqueue(vec![NewJob {
            envelope: Envelope {
                schema_version: SCHEMA_VERSION,
                message_id: EMAIL.into(),
                tenant_id: app.tenant.tenant_id,
                user_id: format!("api_key:Bearer {BEARER} {dsn} {}", planted_key()),
                action: "lead_score".into(),
                payload: serde_json::json!({"external_id": "x", "source": "telegram",
                                            "email": EMAIL, "phone": PHONE}),
                timestamp: Utc::now(),
                correlation_id: PHONE.replace(' ', ""),
                trace_context: Default::default(),
                signature: None,
            },
            run_at: None,
            priority: Default::default(),
        }])
        .await
        .unwrap();
    wait_for("the job refused", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().dead == 1).then_some(())
    })
    .await;
    wait_for("an event at Sentry", Duration::from_secs(20), || async {
        (!sentry.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    wait_for(
        "the refusal exported as a span event",
        Duration::from_secs(20),
        || async {
            otlp.lock()
                .unwrap()
                .iter()
                .any(|b| b.contains("Refusing a job"))
                .then_some(())
        },
    )
    .await;
    for child in [&mut api, &mut worker] {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
    }

    let logs =
        std::fs::read_to_string(&api_log).unwrap() + &std::fs::read_to_string(&worker_log).unwrap();
    let events = sentry.lock().unwrap().join("\n");
    let spans = otlp.lock().unwrap().join("\n");
    // The failures were really logged and reported (so absence below means scrubbing).
    assert!(logs.contains("Refused credentials"), "{logs}");
    assert!(logs.contains("Refusing a job"), "{logs}");
    assert!(events.contains("Refusing a job"), "{events}");
    let key = planted_key();
    let key_secret = key.rsplit('_').next().unwrap();
    for (place, text) in [
        ("logs", &logs),
        ("sentry", &events),
        ("spans", &spans),
        ("bodies", &bodies.join("\n")),
    ] {
        for secret in [
            DSN_PASSWORD,
            BEARER,
            EMAIL,
            "415 555 0199",
            "+14155550199",
            key_secret,
        ] {
            assert!(!text.contains(secret), "{secret} found in {place}:\n{text}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    app.stop().await;
}

/// An admin command's failure is printed scrubbed, with the configured extra patterns, like a
/// service's log line: `leadq lead erase` for a tenant that does not exist names what it was
/// given, and a value matching `LEADQ_SCRUB_PATTERNS` in it is masked. (Admin commands
/// installed only the built-in rules, and printed their error as it was.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_commands_error_is_printed_scrubbed_with_the_extra_patterns() {
    let app = spawn_app().await;
    #[allow(clippy::disallowed_methods)]
    let out = crate::leadq_cmd(&app)
        .args(["lead", "erase", "acme-SEKRIT4242", "tg-1"])
        .env("LEADQ_SCRUB_PATTERNS", r#"["SEKRIT[0-9]+"]"#)
        .env(
            "LEADQ_DATA_KEYS",
            app.settings.data_keys().to_spec().expose(),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no tenant with slug"), "{err}");
    assert!(!err.contains("SEKRIT4242"), "{err}");
    app.stop().await;
}
