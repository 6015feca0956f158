//! The scrubber's unit tests: every rule, what must stay untouched, the writer, Sentry.

use std::io::{self, Write};

use std::sync::Mutex;
use tracing_subscriber::fmt::MakeWriter;

use sentry::protocol::{Exception, LogEntry, Map, Request, TraceContext, User};

use super::*;

fn s(text: &str) -> String {
    Scrubber::default().scrub(text).into_owned()
}

fn assert_unchanged(text: &str) {
    let out = Scrubber::default().scrub(text);
    assert!(
        matches!(out, Cow::Borrowed(_)),
        "expected unchanged:\n  {text}\ngot:\n  {out}"
    );
}

const LQ_KEY: &str =
    "lq_0123456789ab_4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";

#[test]
fn scrubber_is_cheap_to_share() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Scrubber>();
    let a = Scrubber::default();
    let b = a.clone();
    assert!(Arc::ptr_eq(&a.inner, &b.inner));
    assert!(Arc::ptr_eq(&Scrubber::default().inner, &a.inner));
    assert_eq!(
        format!("{:?}", Scrubber::new(&["x+".into()]).unwrap()),
        format!(
            "Scrubber {{ builtin_rules: {}, extra_patterns: 1 }}",
            BUILTINS.len()
        )
    );
}

#[test]
fn emails_are_masked() {
    assert_eq!(s("sent to ada@example.com."), "sent to [email].");
    assert_eq!(
        s(r#"{"name":"Ada","email":"ada.lovelace+crm@mail.example.co.uk","x":1}"#),
        r#"{"name":"Ada","email":"[email]","x":1}"#
    );
    assert_eq!(s("a@b.io, C.D@E.ORG"), "[email], [email]");
    // Inside a JSON string after a \n escape, the escape survives.
    let line = r#"{"message":"lead:\nada@example.com"}"#;
    let out = s(line);
    assert_eq!(out, r#"{"message":"lead:\n[email]"}"#);
    serde_json::from_str::<Value>(&out).unwrap();
    // A URL's user name is not an address.
    assert_unchanged("git clone ssh://git@github.com/org/repo.git");
}

#[test]
fn phone_numbers_are_masked_in_common_formats() {
    for phone in [
        "+7 912 345 67 89",
        "+7 (912) 345-67-89",
        "+79123456789",
        "+1 (555) 123-4567",
        "+1-555-123-4567",
        "+44 20 7946 0958",
        "+380 44 123 45 67",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "1-555-123-4567",
        "8 912 345-67-89",
        "8 (912) 345-67-89",
        "8-912-345-67-89",
        "912 345-67-89",
        "020 7946 0958",
        "06 12 34 56 78",
    ] {
        assert_eq!(
            s(&format!("call {phone} now")),
            "call [phone] now",
            "{phone}"
        );
        assert_eq!(
            s(&format!(r#"{{"phone_hint":"{phone}"}}"#)),
            r#"{"phone_hint":"[phone]"}"#,
            "{phone}"
        );
    }
    assert_eq!(
        s("Telegram lead: +7 912 345 67 89 (ada)"),
        "Telegram lead: [phone] (ada)"
    );
}

#[test]
fn numbers_that_are_not_phones_are_left_alone() {
    for text in [
        "job_id=01a20671-ec94-7581-a332-9d0618b46bad",
        "tenant 12345678-1234-1234-1234-123456789012 paused",
        "2026-11-23T03:27:39.272703Z",
        "at 2026-11-23T03:27:39+03:00 and 2026-11-23 03:27:39",
        "listening on 127.0.0.1:8080",
        "redis 10.0.0.5:6379, postgres [::1]:55432",
        "attempt=3 max_attempts=5",
        "elapsed_ms=12.5 took 1500ms (budget 30000 ms)",
        r#"{"t_enq":1795404459215.7,"t_deq":1795404459216,"seq":1204}"#,
        "version 1.85.0, build 20261123.1",
        "score 95 of 100, 3 reasons, 42 leads",
        "hash 4bf92f3577b34da6a3ce929d0e0e4736",
        "sizes 51-200, budget 50k+",
        "1 000 000 jobs",
    ] {
        assert_unchanged(text);
    }
}

#[test]
fn authorization_schemes_are_masked() {
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    assert_eq!(
        s(&format!("Authorization: Bearer {jwt}")),
        "Authorization: Bearer [redacted]"
    );
    assert_eq!(
        s(&format!(
            "curl -H \"Authorization: Bearer {LQ_KEY}\" /v1/leads"
        )),
        "curl -H \"Authorization: Bearer [redacted]\" /v1/leads"
    );
    assert_eq!(s("bearer abc123def456"), "Bearer [redacted]");
    assert_eq!(
        s("authorization: bearer xxx"),
        "authorization: Bearer [redacted]"
    );
    assert_eq!(
        s("Authorization: Basic dXNlcjpodW50ZXIy"),
        "Authorization: Basic [redacted]"
    );
    assert_eq!(s("sent Basic dXNlcjpodW50ZXIy"), "sent Basic [redacted]");
    assert_eq!(
        s(&format!(r#"{{"authorization":"Bearer {jwt}"}}"#)),
        r#"{"authorization":"[redacted]"}"#
    );
    assert_eq!(
        s("authorization=Bearer abc123def456"),
        "authorization=Bearer [redacted]"
    );
    assert_unchanged("missing bearer token");
    assert_unchanged("expected Bearer credentials, got Basic");
    assert_unchanged("a basic lead with basic information");
}

#[test]
fn leadq_api_keys_are_masked() {
    assert_eq!(
        s(&format!("key {LQ_KEY} refused")),
        "key lq_[redacted] refused"
    );
    assert_eq!(
        s(&format!(r#"{{"k":"{LQ_KEY}"}}"#)),
        r#"{"k":"lq_[redacted]"}"#
    );
    assert_eq!(s(&format!("api_key={LQ_KEY}")), "api_key=[redacted]");
    // The prefix alone is the key's public id.
    assert_unchanged("key lq_0123456789ab revoked");
}

#[test]
fn secrets_are_masked_by_key_name() {
    let cases = [
        ("password=hunter2 user=ada", "password=[redacted] user=ada"),
        ("db_password=hunter2", "db_password=[redacted]"),
        ("passwd=x1 pwd=x2", "passwd=[redacted] pwd=[redacted]"),
        (
            "secret=s3 client_secret=abc",
            "secret=[redacted] client_secret=[redacted]",
        ),
        (
            "api_key=k1, apikey=k2; token=t3",
            "api_key=[redacted], apikey=[redacted]; token=[redacted]",
        ),
        (
            "access_token=a&refresh_token=b",
            "access_token=[redacted]&refresh_token=[redacted]",
        ),
        (
            r#"{"password":"hunter2","a":1}"#,
            r#"{"password":"[redacted]","a":1}"#,
        ),
        (
            r#"{"Password" : "hunter2"}"#,
            r#"{"Password" : "[redacted]"}"#,
        ),
        (
            r#"{"api_key":"k","token":12345}"#,
            r#"{"api_key":"[redacted]","token":[redacted]}"#,
        ),
        (
            r#"{"token":null,"secret":""}"#,
            r#"{"token":null,"secret":""}"#,
        ),
        (r#"password="hunter 2""#, r#"password="[redacted]""#),
        (
            "Config { client_secret: \"abc\" }",
            "Config { client_secret: \"[redacted]\" }",
        ),
        ("password: hunter2", "password: [redacted]"),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key=[redacted]",
        ),
        (
            "SENTRY_DSN=https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/4",
            "SENTRY_DSN=[redacted]",
        ),
        // A JSON document quoted inside a JSON log line stays valid JSON.
        (
            r#"{"message":"body {\"password\":\"hunter2\",\"name\":\"Ada\"}"}"#,
            r#"{"message":"body {\"password\":\"[redacted]\",\"name\":\"Ada\"}"}"#,
        ),
        (
            r#"{"message":"bad input password=hunter2\"x"}"#,
            r#"{"message":"bad input password=[redacted]\"x"}"#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(s(input), expected, "{input}");
    }
    let line = s(r#"{"message":"body {\"password\":\"hunter2\"}"}"#);
    serde_json::from_str::<Value>(&line).unwrap();
    // Prose and look-alike keys.
    assert_unchanged("refresh token: timeout after 3 attempts");
    assert_unchanged("token_count=5 max_tokens=100 secret_version=3 api_key_id=7");
    assert_unchanged(r#"{"idempotency_key":"abc","kind":"secret"}"#);
}

#[test]
fn pretty_log_colours_do_not_hide_a_secret() {
    let line = "\x1b[3mpassword\x1b[0m\x1b[2m=\x1b[0mhunter2 \x1b[3muser\x1b[0m\x1b[2m=\x1b[0mada";
    let out = s(line);
    assert!(!out.contains("hunter2"), "{out:?}");
    assert!(out.contains("ada"), "{out:?}");
}

#[test]
fn secret_query_parameters_are_masked() {
    let cases = [
        ("GET /cb?token=abc&x=1", "GET /cb?token=[redacted]&x=1"),
        ("/hook?x=1&sig=0a1b2c&y=2", "/hook?x=1&sig=[redacted]&y=2"),
        ("/hook?signature=0a1b2c", "/hook?signature=[redacted]"),
        (
            "https://maps.example.com/api?key=AIzaSyD-abc&q=x",
            "https://maps.example.com/api?key=[redacted]&q=x",
        ),
        ("/login?auth=xyz#top", "/login?auth=[redacted]#top"),
        (
            "https://b.s3.amazonaws.com/o?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00d",
            "https://b.s3.amazonaws.com/o?X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(s(input), expected, "{input}");
    }
    assert_unchanged("/v1/leads?limit=50&cursor=01a20671&design=x");
}

#[test]
fn credentials_in_connection_strings_are_masked() {
    let cases = [
        ("postgres://leadq:hunter2@db:5432/leadq", "postgres://leadq:[redacted]@db:5432/leadq"),
        ("postgresql://u:p%40ss@10.0.0.4/x?sslmode=require", "postgresql://u:[redacted]@10.0.0.4/x?sslmode=require"),
        ("redis://:hunter2@10.0.0.5:6379/0", "redis://:[redacted]@10.0.0.5:6379/0"),
        ("rediss://default:hunter2@cache.example.com:6380", "rediss://default:[redacted]@cache.example.com:6380"),
        ("amqp://guest:guest@rabbit:5672/%2f", "amqp://guest:[redacted]@rabbit:5672/%2f"),
        ("mysql://root:p@ss@db/app", "mysql://root:[redacted]@db/app"),
        ("mongodb+srv://app:s3cr3t@cluster0.example.net/db", "mongodb+srv://app:[redacted]@cluster0.example.net/db"),
        ("https://user:pass@example.com/x", "https://user:[redacted]@example.com/x"),
        (
            "error connecting to \"redis://:hunter2@10.0.0.5:6379/0\": refused",
            "error connecting to \"redis://:[redacted]@10.0.0.5:6379/0\": refused",
        ),
        (
            "dsn https://0123456789abcdef0123456789abcdef@o123.ingest.sentry.io/456",
            "dsn https://[redacted]@o123.ingest.sentry.io/456",
        ),
        (
            "https://0123456789abcdef0123456789abcdef:fedcba9876543210fedcba9876543210@sentry.example.com/2",
            "https://[redacted]@sentry.example.com/2",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(s(input), expected, "{input}");
    }
    assert_unchanged("GET http://localhost:8080/v1/status?x=1 from 127.0.0.1");
    assert_unchanged("redis://10.0.0.5:6379/0");
}

#[test]
fn aws_access_keys_are_masked() {
    assert_eq!(s("key AKIAIOSFODNN7EXAMPLE used"), "key [aws-key] used");
    assert_eq!(
        s(r#"{"id":"ASIAY34FZKBOKMUTVV7A"}"#),
        r#"{"id":"[aws-key]"}"#
    );
    assert_eq!(
        s("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        "aws_secret_access_key = [redacted]"
    );
    assert_unchanged("XAKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPL");
}

#[test]
fn telegram_bot_tokens_are_masked() {
    let token = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ";
    assert_eq!(token.split(':').nth(1).unwrap().len(), 35);
    assert_eq!(s(&format!("bot {token} up")), "bot [telegram-token] up");
    assert_eq!(
        s(&format!(
            "POST https://api.telegram.org/bot{token}/sendMessage"
        )),
        "POST https://api.telegram.org/bot[telegram-token]/sendMessage"
    );
    assert_unchanged("ratio 110201543:12, at 03:27:39");
}

#[test]
fn extra_patterns_are_masked_and_bad_ones_refused() {
    let scrubber = Scrubber::new(&[
        r"ACME-\d{6}".into(),
        "  ".into(),
        r"(?i)inn\s*\d{10}".into(),
    ])
    .unwrap();
    assert_eq!(
        scrubber.scrub("order ACME-123456 for INN 7707083893"),
        "order [redacted] for [redacted]"
    );
    // Extras run after the built-in rules, never instead of them.
    assert_eq!(scrubber.scrub("ada@example.com"), "[email]");

    // The error names a pattern by its place, never by its text: a pattern is often the secret.
    let err = Scrubber::new(&["ok".into(), "(unclosedSEKRIT".into()]).unwrap_err();
    assert!(
        matches!(&err, ScrubError::InvalidPattern { position: 2, pattern, .. } if pattern == "(unclosedSEKRIT")
    );
    assert_eq!(
        err.to_string(),
        "scrub pattern #2 is not a valid regular expression"
    );
    assert!(std::error::Error::source(&err).is_some());

    let err = Scrubber::new(&["".into(), "a*".into()]).unwrap_err();
    assert!(matches!(&err, ScrubError::MatchesEmpty { position: 2, pattern } if pattern == "a*"));
    assert_eq!(err.to_string(), "scrub pattern #2 matches the empty string");
}

#[test]
fn ordinary_log_lines_come_back_borrowed() {
    for line in [
        r#"{"timestamp":"2026-11-23T03:27:39.272703Z","level":"WARN","message":"Job run failed.","kind":"lead_score"}"#,
        r#"{"timestamp":"2026-11-23T03:27:40.001Z","level":"INFO","message":"lead scored","score":95,"tier":"hot","spans":[{"correlation_id":"01a20671-ec94-7581-a332-9d0618b46bad","tenant_id":"4c1d9e2a-5b7f-4e8a-9c3d-2f1e0a9b8c7d","name":"job"}]}"#,
        "job_id=01a20671-ec94-7581-a332-9d0618b46bad attempt=3 elapsed_ms=12.5",
        "Лид от Ады: бюджет 50k+, сроки — этот месяц ✓",
        "",
    ] {
        assert_unchanged(line);
    }
}

#[test]
fn scrubbing_is_idempotent() {
    for text in [
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc password=x ada@example.com",
        "redis://:hunter2@10.0.0.5:6379/0 +7 912 345 67 89 AKIAIOSFODNN7EXAMPLE",
        r#"{"token":"t","message":"see https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/4?sig=1"}"#,
    ] {
        let once = s(text);
        assert_ne!(once, text);
        assert_unchanged(&once);
    }
}

#[test]
fn json_values_are_scrubbed_and_sensitive_keys_redacted() {
    let mut v = serde_json::json!({
        "external_id": "tg-1001",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "email_verified": true,
        "phoneNumber": 79123456789u64,
        "headers": {
            "X-Api-Key": "abc",
            "Set-Cookie": "sid=1",
            "Authorization": "Bearer x",
            "User-Agent": "curl/8"
        },
        "client_secret": {"nested": "x"},
        "accessToken": "t",
        "sentry_dsn": null,
        "answers": {"need": "call me at +7 912 345 67 89 or ada@example.com", "budget": "50k+"},
        "notes": ["password=hunter2", 3, null],
        "tokens_used": 12,
        "author": "ada"
    });
    Scrubber::default().scrub_json(&mut v);
    assert_eq!(
        v,
        serde_json::json!({
            "external_id": "tg-1001",
            "name": "Ada Lovelace",
            "email": "[redacted]",
            "email_verified": true,
            "phoneNumber": "[redacted]",
            "headers": {
                "X-Api-Key": "[redacted]",
                "Set-Cookie": "[redacted]",
                "Authorization": "[redacted]",
                "User-Agent": "curl/8"
            },
            "client_secret": "[redacted]",
            "accessToken": "[redacted]",
            "sentry_dsn": null,
            "answers": {"need": "call me at [phone] or [email]", "budget": "50k+"},
            "notes": ["password=[redacted]", 3, null],
            "tokens_used": 12,
            "author": "ada"
        })
    );
}

#[test]
fn sensitive_key_names() {
    for key in [
        "password",
        "Password",
        "db_password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refreshToken",
        "csrftoken",
        "authorization",
        "Proxy-Authorization",
        "api_key",
        "apiKey",
        "APIKey",
        "x-api-key",
        "X-Api-Key",
        "cookie",
        "set-cookie",
        "phone",
        "phone_number",
        "email",
        "emails",
        "dsn",
        "sentry_dsn",
        "auth",
        "sig",
        "signature",
        "aws_secret_access_key",
        "private_key",
        "session_id",
    ] {
        assert!(is_sensitive_key(key), "{key}");
    }
    for key in [
        "name",
        "kind",
        "tenant_id",
        "message_id",
        "tokens_used",
        "max_tokens",
        "author",
        "key",
        "idempotency_key",
        "design",
        "status",
    ] {
        assert!(!is_sensitive_key(key), "{key}");
    }
}

/// An `io::Write` that records every `write` call.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_writer_scrubs_a_line_split_over_several_writes() {
    let out = Capture::default();
    let mut w = ScrubbingWriter::with_scrubber(out.clone(), Scrubber::default());
    for part in [
        r#"{"message":"login","pass"#,
        r#"word":"hun"#,
        r#"ter2","to":"ada@exa"#,
        "mple.com\"}\n{\"message\":\"next\",\"phone\":\"+7 912 ",
    ] {
        w.write_all(part.as_bytes()).unwrap();
    }
    // The first line went out whole and scrubbed; the second waits for its end.
    assert_eq!(
        out.text(),
        "{\"message\":\"login\",\"password\":\"[redacted]\",\"to\":\"[email]\"}\n"
    );
    w.write_all(b"345 67 89\"}").unwrap();
    w.flush().unwrap();
    assert_eq!(
        out.text(),
        concat!(
            "{\"message\":\"login\",\"password\":\"[redacted]\",\"to\":\"[email]\"}\n",
            "{\"message\":\"next\",\"phone\":\"[phone]\"}",
        )
    );
    // What is left at drop is written too.
    w.write_all(b"token=abc").unwrap();
    drop(w);
    assert!(out.text().ends_with("token=[redacted]"), "{}", out.text());
}

#[test]
fn the_writer_uses_the_global_scrubber_by_default() {
    let out = Capture::default();
    let mut w = ScrubbingWriter::new(out.clone());
    w.write_all(b"redis://:hunter2@10.0.0.5:6379/0\n").unwrap();
    assert_eq!(out.text(), "redis://:[redacted]@10.0.0.5:6379/0\n");
    let _ = scrubbing_stderr().make_writer();
}

#[test]
fn log_events_are_scrubbed_through_tracing_subscriber() {
    let out = Capture::default();
    let sink = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(ScrubbingMakeWriter::with_scrubber(
            move || sink.clone(),
            Scrubber::default(),
        ))
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(
            email = "ada@example.com",
            url = "postgres://leadq:hunter2@db/leadq",
            kind = "lead_score",
            "Job run failed for +7 912 345 67 89"
        );
    });
    let text = out.text();
    assert!(text.ends_with('\n'), "{text}");
    let line: Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(line["email"], "[email]");
    assert_eq!(line["url"], "postgres://leadq:[redacted]@db/leadq");
    assert_eq!(line["kind"], "lead_score");
    assert_eq!(line["message"], "Job run failed for [phone]");
}

#[test]
fn sentry_events_are_scrubbed() {
    let mut event = Event::new();
    event.message = Some("login failed for ada@example.com with password=hunter2".into());
    event.transaction = Some("POST /v1/leads".into());
    event.server_name = Some("worker-1".into());
    event.logentry = Some(LogEntry {
        message: "connect redis://:hunter2@10.0.0.5:6379/0".into(),
        params: vec!["ada@example.com".into()],
    });
    event.exception.values.push(Exception {
        ty: "Error".into(),
        value: Some(format!("key {LQ_KEY} rejected")),
        ..Default::default()
    });
    let mut data = Map::new();
    data.insert("phone".into(), Value::from("+7 912 345 67 89"));
    data.insert("url".into(), Value::from("/cb?token=abc&x=1"));
    event.breadcrumbs.values.push(Breadcrumb {
        message: Some("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig".into()),
        data,
        ..Default::default()
    });
    event.extra.insert("api_key".into(), Value::from("abc"));
    event
        .extra
        .insert("note".into(), Value::from("call 555-123-4567"));
    event.tags.insert("tenant".into(), "acme".into());
    event
        .tags
        .insert("contact".into(), "ada@example.com".into());
    event.tags.insert("token".into(), "t0k3n".into());
    let mut other = Map::new();
    other.insert(
        "dsn".into(),
        Value::from("https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/4"),
    );
    other.insert("host".into(), Value::from("mysql://root:hunter2@db/app"));
    event.contexts.insert("job".into(), Context::Other(other));
    let trace = TraceContext {
        description: Some("GET /cb?sig=f00d".into()),
        ..Default::default()
    };
    event
        .contexts
        .insert("trace".into(), Context::Trace(Box::new(trace)));
    let mut headers = Map::new();
    headers.insert("Authorization".into(), "Bearer abc".into());
    headers.insert("Cookie".into(), "sid=1".into());
    headers.insert("X-Forwarded-For".into(), "203.0.113.9".into());
    headers.insert("Content-Type".into(), "application/json".into());
    let mut env = Map::new();
    env.insert("REMOTE_ADDR".into(), "203.0.113.9".into());
    event.request = Some(Request {
        url: Some(
            "https://u:hunter2@api.example.com/v1/leads?token=abc&page=2"
                .parse()
                .unwrap(),
        ),
        method: Some("POST".into()),
        data: Some(r#"{"email":"ada@example.com","name":"Ada","note":"pwd=hunter2"}"#.into()),
        query_string: Some("token=abc&sig=f00d&page=2".into()),
        cookies: Some("sid=hunter2".into()),
        headers,
        env,
    });
    event.user = Some(User {
        id: Some("user-42".into()),
        email: Some("ada@example.com".into()),
        ip_address: Some("203.0.113.9".parse().unwrap()),
        username: Some("ada".into()),
        ..Default::default()
    });

    let event = scrub_sentry_event(event).expect("the hook keeps the event");
    let json = serde_json::to_string(&event).unwrap();
    for leak in [
        "ada@example.com",
        "hunter2",
        "+7 912",
        "555-123-4567",
        "eyJhbGciOi",
        "4f3c2a1b0e9d",
        "t0k3n",
        "0123456789abcdef0123456789abcdef",
        "203.0.113.9",
        "token=abc",
        "sig=f00d",
        "sid=1",
        "\"ada\"",
    ] {
        assert!(!json.contains(leak), "{leak} leaked: {json}");
    }
    assert_eq!(event.transaction.as_deref(), Some("POST /v1/leads"));
    assert_eq!(event.server_name.as_deref(), Some("worker-1"));
    assert_eq!(
        event.message.as_deref(),
        Some("login failed for [email] with password=[redacted]")
    );
    assert_eq!(event.tags["tenant"], "acme");
    assert_eq!(event.tags["token"], "[redacted]");
    assert_eq!(event.extra["api_key"], "[redacted]");
    let user = event.user.as_ref().unwrap();
    assert_eq!(user.id.as_deref(), Some("user-42"));
    assert!(user.email.is_none() && user.ip_address.is_none() && user.username.is_none());
    let req = event.request.as_ref().unwrap();
    assert_eq!(
        req.query_string.as_deref(),
        Some("token=[redacted]&sig=[redacted]&page=2")
    );
    assert_eq!(req.headers["Content-Type"], "application/json");
    assert_eq!(req.headers["Authorization"], "[redacted]");
    let body: Value = serde_json::from_str(req.data.as_deref().unwrap()).unwrap();
    assert_eq!(body["name"], "Ada");
    assert_eq!(body["email"], "[redacted]");
    let url = req.url.as_ref().unwrap();
    assert_eq!(url.host_str(), Some("api.example.com"));
    assert_eq!(url.query(), Some("token=[redacted]&page=2"));

    let crumb = scrub_sentry_breadcrumb(Breadcrumb {
        message: Some("to ada@example.com".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(crumb.message.as_deref(), Some("to [email]"));
}
