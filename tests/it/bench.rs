//! `leadq bench` end to end, small: the figures it prints are the ones the closing notes and
//! `docs/bench.md` quote, so the binary must keep running on both runtimes and its precise
//! timer must never cut a handler short (that would inflate jobs/s past the C/d bound).

use serde_json::Value;

/// Runs `leadq bench` on the test Redis with its own queue name, and returns its JSON line.
fn bench(args: &[&str]) -> Value {
    #[allow(clippy::disallowed_methods)]
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL (run through scripts/test)");
    let port = redis
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .expect("REDIS_URL has a port")
        .to_owned();
    let queue = format!("bench-it-{}", uuid::Uuid::new_v4().simple());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadq"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args([
            "bench",
            "--port",
            &port,
            "--queue",
            &queue,
            "--timeout-s",
            "60",
        ])
        .args(args)
        .output()
        .expect("leadq bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "leadq bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} missing in {v}"))
}

#[test]
fn a_precise_sleep_drain_on_one_thread_completes_every_job_within_the_c_over_d_bound() {
    let v = bench(&[
        "--n",
        "400",
        "--c",
        "20",
        "--sleep-ms",
        "2",
        "--sleep-timer",
        "precise",
        "--runtime",
        "current-thread",
    ]);
    assert_eq!(v["handler"], "sleep2ms-precise");
    assert_eq!(v["runtime"], "rust tokio current-thread apalis-core 1.0");
    assert_eq!(f(&v, &["completed"]), 400.0);
    assert_eq!(f(&v, &["failed"]), 0.0);
    assert_eq!(f(&v, &["bound_c_over_d"]), 10_000.0);
    // Every handler slept its full 2 ms, so no drain can beat C/d.
    assert!(f(&v, &["handler_ms", "min"]) >= 2.0, "{v}");
    assert!(f(&v, &["jobs_per_s"]) <= f(&v, &["bound_c_over_d"]), "{v}");
    assert!(f(&v, &["share_of_bound"]) <= 1.0, "{v}");
}

#[test]
fn a_no_op_drain_on_the_multi_thread_runtime_completes_every_job_and_reports_redis_cost() {
    let v = bench(&["--n", "300", "--c", "10"]);
    assert_eq!(v["handler"], "noop");
    assert_eq!(v["runtime"], "rust tokio multi-thread apalis-core 1.0");
    assert_eq!(f(&v, &["completed"]), 300.0);
    assert!(f(&v, &["jobs_per_s"]) > 0.0, "{v}");
    // Read from Redis INFO, which other tests share: present, not bounded here.
    assert!(f(&v, &["redis", "work", "cmds_per_job"]) > 0.0, "{v}");
}

#[test]
fn fair_mode_spreads_the_backlog_over_many_tenants_and_times_each_new_tenants_job() {
    let v = bench(&[
        "--mode",
        "fair",
        "--n",
        "300",
        "--c",
        "10",
        "--rate",
        "200",
        "--duration",
        "0.5",
        "--tenants",
        "50",
        "--arrivals",
        "new",
    ]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["tenants"], 50, "{v}");
    assert_eq!(v["arrivals"], "new", "{v}");
    // The backlog and the 100 arrivals all ran, and each arrival's wait was measured.
    assert_eq!(f(&v, &["completed"]), 400.0, "{v}");
    assert_eq!(f(&v, &["b_lat_ms", "count"]), 100.0, "{v}");
    assert!(f(&v, &["b_first_ms"]) > 0.0, "{v}");
    assert!(f(&v, &["redis", "work", "cmds_per_job"]) > 0.0, "{v}");
}

/// `leadq bench --mode e2e`, tiny, for both sources: the real API and worker (started by the
/// bench on the test's database and queues), leads and signed Chatwoot messages posted over
/// HTTP, every one stored once and the audit chains intact. No timing is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_e2e_mode_runs_the_real_path_and_checks_what_it_stored() {
    let app = leadq_testkit::spawn_app().await;
    // Leads also read back, one read after each posted lead (30 audited reads).
    for (source, c, reads) in [("lead", "4", "1"), ("chatwoot", "4", "0")] {
        let out = crate::leadq_cmd(&app)
            .args(["bench", "--mode", "e2e", "--tenants", "2", "--leads", "30"])
            .args(["--c", c, "--timeout-s", "60", "--source", source])
            .args(["--reads-per-lead", reads])
            .output()
            .expect("run leadq bench --mode e2e");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{source}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        for field in [
            "mode",
            "tenants",
            "n",
            "scored_per_s",
            "ingest_per_s",
            "http_ms",
            "e2e_ms",
            "stored_once",
            "audit_verified",
            "ok",
            "tx_per_lead",
            "wal_bytes_per_lead",
            "worker_rss_mb",
            "api_rss_mb",
        ] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
        assert_eq!(line["mode"], "e2e");
        assert_eq!(line["source"], source);
        assert_eq!(line["n"], 30, "{line}");
        assert_eq!(line["completed"], 30, "{line}");
        assert_eq!(line["stored_once"], true, "{line}");
        assert_eq!(line["audit_verified"], true, "{line}");
        assert_eq!(line["ok"], true, "{line}");
        assert!(line["e2e_ms"]["p99"].as_f64().unwrap() >= line["e2e_ms"]["p50"].as_f64().unwrap());
        let found = if source == "lead" { 30 } else { 0 };
        assert_eq!(line["reads_found"], found, "{line}");
        assert_eq!(line["reads_missed"], 0, "{line}");
        assert_eq!(line["reads_audited"], true, "{line}");
        // The breakdown read off the worker it started: every phase, and a run takes time.
        let phases = line["phases_ms"].as_object().expect("phases_ms: {line}");
        for phase in leadq_platform::metrics::phase::ALL {
            assert!(phases[phase].as_f64().is_some(), "{phase}: {line}");
        }
        assert!(phases["run"].as_f64().unwrap() > 0.0, "{line}");
        // CPU read from /proc for each process it started, itself and the machine (in 10 ms
        // ticks: 30 leads may cost a process less than one, so only the machine must show).
        let cpu = &line["cpu_ms_per_lead"];
        for part in ["api", "worker", "bench"] {
            assert!(
                cpu[part].as_f64().is_some_and(|ms| ms >= 0.0),
                "{part}: {line}"
            );
        }
        assert!(cpu["machine"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    }
    app.stop().await;
}
