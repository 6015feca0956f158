//! Error alerts to Telegram (`leadq-notify`) against a fake Bot API that answers like
//! Telegram: 200 with a `Message`, 429 with `parameters.retry_after`, 400 "message is too
//! long", 400 "can't parse entities", 400 with `migrate_to_chat_id`, 403 "bot was blocked".
//!
//! Each test runs its own "processes" (independent `Notifier`s, each with its own alert
//! state connection) on the shared test Redis under a fresh key prefix, with short windows.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use leadq_notify::render::TRUNCATED;
use leadq_notify::{Alert, AlertLayer, Config, Notifier, Severity};
use leadq_platform::config::{AlertChannelSettings, AlertPolicySettings};
use leadq_platform::scrub::Scrubber;
use leadq_platform::secret::Secret;
use leadq_queue::alert_state::AlertState;
use leadq_testkit::{queue_prefix, wait_for};
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;

/// The bot token of the tests, made fresh per run in Telegram's shape (digits, a colon, 35
/// characters), so no token-like literal sits in the repository. It may appear in the URL
/// path, never in a text.
fn token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| format!("987654321:AAH{}", uuid::Uuid::new_v4().simple()))
}
const CHAT: &str = "-1001111111111";
const WAIT: Duration = Duration::from_secs(30);

/// A scripted answer of the fake.
#[derive(Debug, Clone, Copy)]
enum Reply {
    RetryAfter(u64),
    TooLong,
    BadEntities,
    Blocked,
    Migrated(i64),
}

/// One `sendMessage` the fake received.
#[derive(Debug, Clone)]
struct Received {
    chat_id: Value,
    text: String,
    parse_mode: Option<String>,
    at: Instant,
}

#[derive(Default)]
struct FakeState {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    next_id: i64,
}

#[derive(Clone)]
struct FakeBotApi {
    url: String,
    state: Arc<Mutex<FakeState>>,
}

async fn send_message(
    State(state): State<Arc<Mutex<FakeState>>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut s = state.lock().unwrap();
    s.received.push(Received {
        chat_id: body["chat_id"].clone(),
        text: body["text"].as_str().unwrap_or_default().to_owned(),
        parse_mode: body["parse_mode"].as_str().map(str::to_owned),
        at: Instant::now(),
    });
    let err = |code: u16, description: &str, parameters: Option<Value>| {
        let mut v = json!({"ok": false, "error_code": code, "description": description});
        if let Some(p) = parameters {
            v["parameters"] = p;
        }
        (StatusCode::from_u16(code).unwrap(), Json(v))
    };
    match s.script.pop_front() {
        Some(Reply::RetryAfter(secs)) => err(
            429,
            &format!("Too Many Requests: retry after {secs}"),
            Some(json!({"retry_after": secs})),
        ),
        Some(Reply::TooLong) => err(400, "Bad Request: message is too long", None),
        Some(Reply::BadEntities) => err(
            400,
            "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 12",
            None,
        ),
        Some(Reply::Blocked) => err(403, "Forbidden: bot was blocked by the user", None),
        Some(Reply::Migrated(to)) => err(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            Some(json!({"migrate_to_chat_id": to})),
        ),
        None => {
            s.next_id += 1;
            let message = json!({
                "message_id": s.next_id,
                "date": chrono::Utc::now().timestamp(),
                "chat": {"id": body["chat_id"], "type": "supergroup", "title": "leadq alerts"},
                "from": {"id": 987654321, "is_bot": true, "first_name": "leadq", "username": "leadq_alerts_bot"},
                "text": body["text"],
            });
            (StatusCode::OK, Json(json!({"ok": true, "result": message})))
        }
    }
}

impl FakeBotApi {
    async fn start(script: &[Reply]) -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            script: script.iter().copied().collect(),
            ..FakeState::default()
        }));
        let app = axum::Router::new()
            .route("/{bot}/sendMessage", axum::routing::post(send_message))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until `n` requests arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        wait_for(&format!("{n} sendMessage call(s)"), WAIT, || async {
            let r = self.received();
            (r.len() >= n).then_some(r)
        })
        .await
    }
}

fn policy() -> AlertPolicySettings {
    AlertPolicySettings {
        max_trace_lines: 5,
        ignored_paths: vec!["/healthz".into(), "/v1/dlq".into()],
        ignored_errors: vec![
            "rate_limited".into(),
            "dead_letter:crm_not_configured".into(),
        ],
        rate_limit: Duration::from_secs(60),
        batch_window: Duration::from_secs(2),
        state_ttl: Duration::from_secs(120),
    }
}

/// One "process": its own notifier and its own connection to the alert state under `prefix`.
async fn process(fake: &FakeBotApi, prefix: &str, name: &str) -> Notifier {
    #[allow(clippy::disallowed_methods)]
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL");
    let config = Config {
        channel: AlertChannelSettings {
            bot_token: Secret::new(token()),
            api_url: fake.url.clone(),
            chat_id: CHAT.into(),
            policy: policy(),
        },
        environment: "it-staging".into(),
        process: name.into(),
        scrubber: Scrubber::new(&[r"CUSTOMER-\d+".to_owned()]).unwrap(),
        min_interval: Duration::from_millis(20),
        per_minute: 1000,
    };
    let state = AlertState::connect(&Secret::new(redis), prefix, false, &Default::default())
        .await
        .unwrap();
    leadq_notify::spawn(config, state)
}

/// Waits until `n`'s counts satisfy `done`.
async fn counts_when(
    n: &Notifier,
    what: &str,
    done: impl Fn(&BTreeMap<&'static str, u64>) -> bool,
) -> BTreeMap<&'static str, u64> {
    wait_for(what, WAIT, || async {
        let c = n.counts();
        done(&c).then_some(c)
    })
    .await
}

/// Tags balanced and nested, only known entities, no stray `<` or `>`.
fn valid_telegram_html(html: &str) -> bool {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        let len = match c {
            '<' => {
                let Some(end) = rest.find('>') else {
                    return false;
                };
                let inner = &rest[1..end];
                match inner.strip_prefix('/') {
                    Some(name) => {
                        if stack.pop().as_deref() != Some(name) {
                            return false;
                        }
                    }
                    None => stack.push(inner.split(' ').next().unwrap().to_owned()),
                }
                end + 1
            }
            '&' => {
                let Some(e) = ["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .find(|e| rest.starts_with(**e))
                else {
                    return false;
                };
                e.len()
            }
            '>' => return false,
            c => c.len_utf8(),
        };
        rest = &rest[len..];
    }
    stack.is_empty()
}

fn critical(title: &str) -> Alert {
    Alert::new(Severity::Critical, "database_unavailable", title).at("api/src/error.rs:166")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_secret_in_an_error_never_reaches_the_bot_api() {
    let fake = FakeBotApi::start(&[]).await;
    let n = process(&fake, &queue_prefix(), "leadq-api").await;
    let secrets = [
        "S3cretPassw0rd",
        "AAHplantedBotTokenSecretSecret_0123",
        "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.sig",
        "ada.lovelace@example.com",
        "CUSTOMER-4242",
        "hunter2-field",
        "sk_live_abcdef123456",
    ];
    let subscriber = tracing_subscriber::registry().with(AlertLayer::to(n.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", route = "/v1/leads", correlation_id = "corr-7");
        let _entered = span.enter();
        // Critical (a dependency is down): sent at once.
        tracing::error!(
            code = "database_unavailable",
            error.cause_chain = %format!(
                "pool timed out: connecting to postgres://leadq:{}@db.internal:5432/leadq\n\
                 caused by: Authorization: Bearer {}\ncaused by: bot 111222333:{} refused",
                secrets[0], secrets[2], secrets[1]
            ),
            password = secrets[5],
            lead = %format!("{} for {}", secrets[3], secrets[4]),
            "Request failed for {} (?token={})", secrets[3], secrets[6]
        );
        // Non-critical: comes in the digest.
        tracing::error!(
            code = "internal",
            error = %format!("upsert failed for {} api_key={}", secrets[3], secrets[6]),
            "CRM sync failed for {}", secrets[4]
        );
        // Marked as alerted elsewhere: skipped.
        tracing::error!(alerted = true, "Job dead-lettered.");
    });
    let received = fake.wait_for(2).await;
    let counts = counts_when(&n, "both messages sent", |c| c["sent"] == 2).await;
    assert_eq!(received.len(), 2, "{received:#?}");
    for r in &received {
        for s in secrets {
            assert!(!r.text.contains(s), "{s} reached the Bot API: {}", r.text);
        }
        assert!(!r.text.contains(token()), "{}", r.text);
        assert!(r.text.contains("it-staging"), "{}", r.text);
        assert_eq!(r.parse_mode.as_deref(), Some("HTML"));
        assert_eq!(r.chat_id, json!(-1001111111111i64));
        assert!(valid_telegram_html(&r.text), "{}", r.text);
    }
    let alert = &received[0].text;
    for marker in [
        "[redacted]",
        "[email]",
        "[telegram-token]",
        "/v1/leads",
        "corr-7",
    ] {
        assert!(alert.contains(marker), "{marker} missing from {alert}");
    }
    assert!(received[1].text.contains("Digest"), "{}", received[1].text);
    assert_eq!(counts["batched"], 1, "{counts:?}");
    println!(
        "--- alert as the fake received it ---\n{alert}\n--- digest ---\n{}",
        received[1].text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_raising_the_same_error_send_one_message_with_a_count() {
    let fake = FakeBotApi::start(&[]).await;
    let prefix = queue_prefix();
    let api = process(&fake, &prefix, "leadq-api").await;
    let worker = process(&fake, &prefix, "leadq-worker").await;
    let same = |job: u32| {
        Alert::new(
            Severity::NonCritical,
            "internal",
            format!("CRM sync failed for job {job}"),
        )
        .at("jobs/src/integrations/hubspot/client.rs:263")
        .cause(format!("HubSpot answered 500 after {job} ms"))
    };
    api.report(same(1));
    worker.report(same(2));
    fake.wait_for(1).await;
    let (a, w) = wait_for("the digest counted as sent", WAIT, || async {
        let (a, w) = (api.counts(), worker.counts());
        (a["sent"] + w["sent"] == 1).then_some((a, w))
    })
    .await;
    println!("two processes: api {a:?}, worker {w:?}");
    // Between them: one line opened, one merged into it; nothing sent at once.
    assert_eq!(a["batched"] + w["batched"], 1, "api {a:?}, worker {w:?}");
    assert_eq!(
        a["deduplicated"] + w["deduplicated"],
        1,
        "api {a:?}, worker {w:?}"
    );
    let received = fake.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let text = &received[0].text;
    assert!(text.contains("2 alert(s), 1 distinct"), "{text}");
    assert!(text.contains("×2</b> CRM sync failed for job"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_rate_limited_and_the_non_critical_rest_arrives_as_one_digest() {
    let fake = FakeBotApi::start(&[]).await;
    let n = process(&fake, &queue_prefix(), "leadq-worker").await;
    for i in 0..10 {
        n.report(critical(&format!("PostgreSQL unreachable after {i} tries")));
    }
    for i in 0..4 {
        n.report(
            Alert::new(
                Severity::NonCritical,
                "timeout",
                format!("lead_score timed out after {i} s"),
            )
            .at("queue/src/ack.rs:80"),
        );
    }
    for i in 0..2 {
        n.report(
            Alert::new(
                Severity::NonCritical,
                "crm_rejected",
                format!("HubSpot refused contact {i}"),
            )
            .at("jobs/src/integrations/hubspot/client.rs:291"),
        );
    }
    let received = fake.wait_for(2).await;
    let counts = counts_when(&n, "both messages sent", |c| c["sent"] == 2).await;
    println!("burst counts: {counts:?}");
    assert_eq!(received.len(), 2, "{received:#?}");
    assert!(
        received[0].text.contains("CRITICAL"),
        "{}",
        received[0].text
    );
    let digest = &received[1].text;
    println!("--- digest ---\n{digest}");
    assert!(digest.contains("15 alert(s), 3 distinct"), "{digest}");
    assert!(digest.contains("×9</b> PostgreSQL unreachable"), "{digest}");
    assert!(
        digest.contains("(repeats of an alert already sent)"),
        "{digest}"
    );
    assert!(digest.contains("×4</b> lead_score timed out"), "{digest}");
    assert!(
        digest.contains("×2</b> HubSpot refused contact"),
        "{digest}"
    );
    assert_eq!(
        (
            counts["rate_limited"],
            counts["batched"],
            counts["deduplicated"],
            counts["dropped"],
            counts["failed"]
        ),
        (9, 2, 4, 0, 0),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_waited_out_by_the_whole_sender() {
    let fake = FakeBotApi::start(&[Reply::RetryAfter(1)]).await;
    let n = process(&fake, &queue_prefix(), "leadq-api").await;
    n.report(critical("first outage"));
    n.report(critical("second outage").at("worker/src/lib.rs:1"));
    let received = fake.wait_for(3).await;
    let counts = counts_when(&n, "both sent", |c| c["sent"] == 2).await;
    assert_eq!(counts["failed"], 0);
    let refused_at = received[0].at;
    for later in &received[1..] {
        assert!(
            later.at.duration_since(refused_at) >= Duration::from_secs(1),
            "a message went out before retry_after had passed"
        );
    }
    assert_eq!(
        received[0].text, received[1].text,
        "the refused message is sent again first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_paths_and_kinds_send_nothing() {
    let fake = FakeBotApi::start(&[]).await;
    let n = process(&fake, &queue_prefix(), "leadq-api").await;
    n.report(critical("health failed").path("/healthz"));
    n.report(critical("redrive failed").path("/v1/dlq/{kind}/redrive"));
    n.report(Alert::new(Severity::Critical, "rate_limited", "limited"));
    n.report(
        Alert::new(Severity::NonCritical, "dead_letter", "no CRM").with_code("crm_not_configured"),
    );
    n.report(critical("the one that counts").path("/v1/leads"));
    let received = fake.wait_for(1).await;
    let counts = counts_when(&n, "sent", |c| c["sent"] == 1).await;
    assert_eq!(counts["ignored"], 4, "{counts:?}");
    assert_eq!(counts["batched"], 0, "{counts:?}");
    assert_eq!(received.len(), 1);
    assert!(received[0].text.contains("the one that counts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_4096_characters_is_truncated_and_stays_valid_html() {
    let fake = FakeBotApi::start(&[]).await;
    let n = process(&fake, &queue_prefix(), "leadq-api").await;
    let long = format!("<tag> & \"quoted\" é😀 {}", "x<&>".repeat(2000));
    n.report(
        critical(&long)
            .cause(long.clone())
            .field("detail", long.clone()),
    );
    let received = fake.wait_for(1).await;
    let text = &received[0].text;
    let units: usize = text.chars().map(char::len_utf16).sum();
    assert!(units <= 4096, "{units} UTF-16 units");
    assert!(text.ends_with(TRUNCATED), "{text}");
    assert!(valid_telegram_html(text), "{text}");
    assert!(text.contains("it-staging"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_refusals_are_handled_as_telegram_means_them() {
    // 400 too long → shorter; 400 can't parse entities → plain text; 400 migrated → new chat.
    let fake = FakeBotApi::start(&[
        Reply::TooLong,
        Reply::BadEntities,
        Reply::Migrated(-1002222222222),
    ])
    .await;
    let n = process(&fake, &queue_prefix(), "leadq-api").await;
    n.report(critical(&"long line ".repeat(300)));
    let r = fake.wait_for(4).await;
    assert!(r[1].text.chars().count() < r[0].text.chars().count());
    assert_eq!(r[2].parse_mode, None, "sent again as plain text");
    assert!(!r[2].text.contains("<b>"), "{}", r[2].text);
    assert_eq!(r[3].chat_id, json!(-1002222222222i64), "the migrated chat");
    n.report(critical("after the migration").at("x.rs:1"));
    let r = fake.wait_for(5).await;
    assert_eq!(r[4].chat_id, json!(-1002222222222i64));
    counts_when(&n, "two sent", |c| c["sent"] == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_bot_stops_sending() {
    let fake = FakeBotApi::start(&[Reply::Blocked]).await;
    let n = process(&fake, &queue_prefix(), "leadq-api").await;
    n.report(critical("first"));
    counts_when(&n, "the refusal", |c| c["failed"] == 1).await;
    assert!(n.is_blocked());
    n.report(critical("second").at("y.rs:2"));
    counts_when(&n, "the second one dropped", |c| c["failed"] == 2).await;
    assert_eq!(fake.received().len(), 1, "nothing is sent after a 403");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_alerted_with_their_ids_and_never_their_payload() {
    use leadq_queue::backend::{JobObserver, JobReport, Rejection};
    use leadq_queue::envelope::JobMeta;
    use leadq_queue::Settled;

    let fake = FakeBotApi::start(&[]).await;
    let n = process(&fake, &queue_prefix(), "leadq-worker").await;
    let db = leadq_testkit::TestDb::new().await;
    let slug = format!("dl-{}", &queue_prefix()[1..]);
    let tenant = leadq_platform::tenant::create(&db.pool, &slug, "test")
        .await
        .unwrap();
    let labels = leadq_jobs::tenant_labels::TenantLabels::new(db.pool.clone(), 50, None);
    let recorder =
        leadq_worker::observer::RunRecorder::new(db.pool.clone(), labels).with_alerts(n.clone());
    let job_id = uuid::Uuid::now_v7();
    let meta = JobMeta {
        job_id,
        attempt: 1,
        schema_version: 1,
        message_id: "msg-1".into(),
        tenant_id: tenant.tenant_id,
        user_id: "bot:lead".into(),
        action: "lead_score".into(),
        timestamp: chrono::Utc::now(),
        correlation_id: "corr-dead-1".into(),
        trace_context: Default::default(),
        shadow: false,
    };
    // A job run without the right: a security dead letter, critical, sent at once.
    recorder
        .finished(JobReport {
            meta: meta.clone(),
            settled: Settled::Dead {
                reason: "unauthorized".into(),
            },
            error_code: Some("unauthorized"),
            due_at: meta.timestamp,
            since: meta.timestamp,
            started_at: chrono::Utc::now(),
            duration: Duration::from_millis(3),
        })
        .await;
    // A forged job: refused before any handler; its tenant is only a claim.
    recorder
        .rejected(Rejection {
            job_id: "0190-forged".into(),
            kind: "lead_score",
            reason: "bad_signature",
            claimed_tenant: Some(tenant.tenant_id),
        })
        .await;
    let received = fake.wait_for(2).await;
    let unauthorized = received
        .iter()
        .find(|r| r.text.contains("unauthorized"))
        .expect("the unauthorized dead letter");
    for needle in [
        "CRITICAL",
        "Job dead-lettered: lead_score (unauthorized)",
        &slug,
        &job_id.to_string(),
        "corr-dead-1",
    ] {
        assert!(
            unauthorized.text.contains(needle),
            "{needle} missing: {}",
            unauthorized.text
        );
    }
    assert!(
        !unauthorized.text.contains("payload"),
        "{}",
        unauthorized.text
    );
    let forged = received
        .iter()
        .find(|r| r.text.contains("bad_signature"))
        .expect("the bad_signature dead letter");
    assert!(forged.text.contains("unverified claim"), "{}", forged.text);
    assert!(forged.text.contains("0190-forged"), "{}", forged.text);
}
