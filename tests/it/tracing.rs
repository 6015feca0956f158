//! One trace from the producer to the CRM: the API's server span, `send` and `process` spans
//! of every job (OpenTelemetry messaging conventions) and the HubSpot client span, captured
//! with the SDK's in-memory exporter; retries link to one creation context; a forged trace
//! context in Redis is refused like any other alteration of a signed envelope.

use std::time::Duration;

use leadq_testkit::{spans, wait_for, TestApp};
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::SpanData;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::crm::{app_with_crm, hot_lead, hubspot_accepting, token, wait_synced, UPSERT};

/// POSTs a lead as a traced producer would, with a `traceparent` of a fresh trace.
async fn post_traced(app: &TestApp, external_id: &str, email: &str) -> TraceId {
    let (trace, traceparent) = spans::new_traceparent();
    let res = app
        .client
        .post(format!("{}/v1/leads", app.address))
        .bearer_auth(app.key())
        .header("traceparent", traceparent)
        .json(&hot_lead(external_id, email))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    trace
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The span tree of `spans`, one line per span: name, kind, links, indented under its parent.
fn tree(spans: &[SpanData]) -> String {
    fn walk(
        spans: &[SpanData],
        parent: opentelemetry::trace::SpanId,
        depth: usize,
        out: &mut String,
    ) {
        let mut children: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.parent_span_id == parent)
            .collect();
        children.sort_by_key(|s| s.start_time);
        for s in children {
            let links = if s.links.is_empty() {
                String::new()
            } else {
                format!(" (links: {})", s.links.len())
            };
            out.push_str(&format!(
                "{}{} [{:?}]{links}\n",
                "  ".repeat(depth),
                s.name,
                s.span_kind
            ));
            walk(spans, s.span_context.span_id(), depth + 1, out);
        }
    }
    let ids: Vec<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut out = String::new();
    for root in spans.iter().filter(|s| !ids.contains(&s.parent_span_id)) {
        out.push_str(&format!(
            "{} [{:?}] (remote parent)\n",
            root.name, root.span_kind
        ));
        walk(spans, root.span_context.span_id(), 1, &mut out);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lead_is_one_trace_from_the_request_to_the_hubspot_upsert() {
    let _watch = spans::watch();
    let (server, _fake) = hubspot_accepting("pat-trace").await;
    let app = app_with_crm(&server, token("pat-trace")).await;
    let worker = app.spawn_worker().await;
    let trace = post_traced(&app, "tg-trace-1", "ada@example.com").await;
    wait_synced(&app, "tg-trace-1").await;
    // Spans are exported as they end: the process span ends after its run is recorded.
    let spans = wait_for(
        "the HubSpot client span and the span of the run that made it",
        Duration::from_secs(10),
        || async {
            let s = spans::of_trace(trace);
            let has = |name: &str| s.iter().any(|s| s.name.starts_with(name));
            (has("POST /crm/v3/objects/contacts/batch/upsert") && has("process crm_sync"))
                .then_some(s)
        },
    )
    .await;
    let printed = tree(&spans);
    println!("trace {trace}:\n{printed}");
    for (name, kind) in [
        ("POST /v1/leads", SpanKind::Server),
        ("send lead_score", SpanKind::Producer),
        ("process lead_score", SpanKind::Consumer),
        ("send crm_sync", SpanKind::Producer),
        ("process crm_sync", SpanKind::Consumer),
        (
            "POST /crm/v3/objects/contacts/batch/upsert",
            SpanKind::Client,
        ),
    ] {
        let found = named(&spans, name);
        assert!(!found.is_empty(), "no {name} span in\n{printed}");
        assert_eq!(found[0].span_kind, kind, "{name}");
    }
    // Each process span continues and links to its send span.
    for kind in ["lead_score", "crm_sync"] {
        let send = named(&spans, &format!("send {kind}"))[0]
            .span_context
            .span_id();
        let process = named(&spans, &format!("process {kind}"))[0];
        assert_eq!(process.parent_span_id, send, "{kind}");
        assert_eq!(process.links.len(), 1);
        assert_eq!(process.links[0].span_context.span_id(), send);
        let attrs: Vec<String> = process
            .attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        for want in [
            "messaging.system=leadq".to_owned(),
            format!("messaging.destination.name={kind}"),
            "messaging.operation.type=process".to_owned(),
        ] {
            assert!(attrs.contains(&want), "{want} not in {attrs:?}");
        }
    }
    // The HubSpot call carried the trace on the wire.
    let received = server.received_requests().await.unwrap();
    let upsert = received.iter().find(|r| r.url.path() == UPSERT).unwrap();
    let carried = upsert.headers.get("traceparent").unwrap().to_str().unwrap();
    assert!(carried.contains(&trace.to_string()), "{carried}");
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_has_two_process_spans_linked_to_one_creation() {
    let _watch = spans::watch();
    let (server, _fake) = hubspot_accepting("pat-retry").await;
    // HubSpot fails the first call: the crm_sync job runs again.
    Mock::given(method("POST"))
        .and(path(UPSERT))
        .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!({
            "status": "error", "message": "internal error", "category": "INTERNAL_ERROR"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let app = app_with_crm(&server, token("pat-retry")).await;
    let worker = app.spawn_worker().await;
    let trace = post_traced(&app, "tg-trace-2", "grace@example.com").await;
    wait_synced(&app, "tg-trace-2").await;
    let send = wait_for(
        "the send crm_sync span",
        Duration::from_secs(10),
        || async {
            named(&spans::of_trace(trace), "send crm_sync")
                .first()
                .map(|s| s.span_context.span_id())
        },
    )
    .await;
    let runs = wait_for("two process spans", Duration::from_secs(10), || async {
        let runs: Vec<SpanData> = spans::linked_to(send)
            .into_iter()
            .filter(|s| s.name == "process crm_sync")
            .collect();
        (runs.len() >= 2).then_some(runs)
    })
    .await;
    assert_eq!(
        runs.len(),
        2,
        "{:?}",
        runs.iter().map(|r| &r.attributes).collect::<Vec<_>>()
    );
    assert!(runs.iter().all(|r| r.span_context.trace_id() == trace));
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_trace_context_in_redis_is_dead_lettered_as_bad_signature() {
    let _watch = spans::watch();
    let app = leadq_testkit::spawn_app().await;
    post_traced(&app, "tg-trace-3", "ada@example.com").await;
    // Before any worker runs it, someone with Redis access points the job at another trace.
    let mut conn = crate::redis_conn().await;
    let key = format!("{{{}:lead_score}}:jobs", app.settings.queue.prefix);
    let jobs: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The hash keeps each job's envelope (and bookkeeping fields beside it).
    let (id, raw) = jobs
        .into_iter()
        .find(|(_, v)| v.contains("\"trace_context\""))
        .expect("the enqueued envelope, with its trace context");
    let (forged, _) = spans::new_traceparent();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let genuine = v["trace_context"]["traceparent"]
        .as_str()
        .unwrap()
        .to_owned();
    let trace_part = genuine.split('-').nth(1).unwrap();
    let tampered = raw.replace(trace_part, &forged.to_string());
    assert_ne!(tampered, raw);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(&id)
        .arg(&tampered)
        .query_async(&mut conn)
        .await
        .unwrap();

    let worker = app.spawn_worker().await;
    let dead = wait_for("the dead letter", Duration::from_secs(20), || async {
        let d = app.queue.dead_letters("lead_score", 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead[0].reason, "bad_signature");
    assert!(
        spans::of_trace(forged).is_empty(),
        "the forged trace was continued"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_api_exports_over_otlp_and_its_log_lines_name_the_trace() {
    let app = leadq_testkit::spawn_app().await;
    // A stand-in OTLP/HTTP receiver: records what the exporter posts.
    let (otlp_port, received) = crate::secrets::fake_sentry().await;
    let api_port = crate::secrets::free_port();
    let log = std::env::temp_dir().join(format!("leadq-otlp-{}.log", uuid::Uuid::new_v4()));
    let mut api = crate::leadq_cmd(&app)
        .arg("api")
        .env("LEADQ_API_ADDR", format!("127.0.0.1:{api_port}"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp_port}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("LEADQ_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{api_port}");
    let client = reqwest::Client::new();
    wait_for("the API", Duration::from_secs(20), || {
        let (c, url) = (client.clone(), format!("{base}/readyz"));
        async move { c.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    let (trace, traceparent) = spans::new_traceparent();
    let res = client
        .post(format!("{base}/v1/leads"))
        .bearer_auth(app.key())
        .header("traceparent", traceparent)
        .header("x-correlation-id", "corr-otlp-1")
        .json(&hot_lead("tg-otlp-1", "ada@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    wait_for(
        "spans at the OTLP receiver",
        Duration::from_secs(20),
        || async { (!received.lock().unwrap().is_empty()).then_some(()) },
    )
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &api.id().to_string()])
        .status()
        .unwrap();
    api.wait().unwrap();
    // The request's log line names its trace next to its correlation id.
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("corr-otlp-1") && l.contains("Request served."))
        .unwrap_or_else(|| panic!("no request line in {text}"));
    assert!(line.contains(&format!(r#""trace_id":"{trace}""#)), "{line}");
    assert!(line.contains(r#""span_id":""#), "{line}");
    let _ = std::fs::remove_file(&log);
    app.stop().await;
}
