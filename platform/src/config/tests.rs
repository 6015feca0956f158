//! The configuration loader's tests: every problem at once, secrets from files and never
//! printed, production's refusals.

use super::*;

pub(super) const KINDS: &[KindDefaults] = &[KindDefaults {
    kind: "lead_score",
    concurrency: 8,
    max_attempts: 5,
    backoff_base: Duration::from_millis(500),
    backoff_max: Duration::from_secs(60),
    timeout: Duration::from_secs(30),
}];
pub(super) const ALL: Needs = Needs {
    database: true,
    redis: true,
    keys: false,
};

pub(super) fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_problem_is_reported_in_one_error() {
    let err = Settings::load(
        &vars(&[
            ("LEADQ_API_ADDR", "nope"),
            ("LEADQ_LEAD_SCORE_CONCURRENCY", "0"),
            ("LEADQ_LOG_FORMAT", "xml"),
            ("LEADQ_SIGNING_KEYS", "k1:c2hvcnQ="),
            ("LEADQ_SCHEDULE_CRM_RECONCILE", "every five minutes"),
            ("LEADQ_SCRUB_PATTERNS", r#"["ok", "(Pl4nt3dS3cr3t"]"#),
        ]),
        ALL,
        KINDS,
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "DATABASE_URL is required",
        "REDIS_URL is required",
        "LEADQ_API_ADDR",
        "LEADQ_LEAD_SCORE_CONCURRENCY must be greater than 0",
        "LEADQ_LOG_FORMAT",
        "LEADQ_SIGNING_KEYS is invalid: entry 1 (k1): key must be exactly 32 bytes",
        "LEADQ_SCHEDULE_CRM_RECONCILE=\"every five minutes\" is not a cron expression",
        "LEADQ_SCRUB_PATTERNS: scrub pattern #2 is not a valid regular expression",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    assert_eq!(err.problems.len(), 8);
    assert!(!text.contains("c2hvcnQ="), "key material echoed: {text}");
    assert!(
        !text.contains("Pl4nt3dS3cr3t"),
        "a scrub pattern echoed: {text}"
    );
}

#[test]
fn production_serves_metrics_only_behind_a_token_or_on_an_address_of_its_own() {
    let key = crate::keyring::Keyring::random("k1").to_spec();
    let key = key.expose();
    let load = |env: &str, extra: &[(&str, &str)], keys: bool| {
        let mut pairs = vec![
            ("LEADQ_ENVIRONMENT", env),
            (
                "DATABASE_URL",
                "postgres://leadq:n0t-the-default-9f3@db/leadq",
            ),
            ("REDIS_URL", "redis://r:6379/"),
            ("LEADQ_SIGNING_KEYS", key),
            ("LEADQ_DATA_KEYS", key),
            ("LEADQ_AUDIT_KEYS", key),
            ("LEADQ_PII_INDEX_KEYS", key),
        ];
        pairs.extend_from_slice(extra);
        let needs = Needs {
            database: true,
            redis: keys,
            keys,
        };
        Settings::load(&vars(&pairs), needs, KINDS)
    };
    let err = load("production", &[], true).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.problems[0].contains("needs LEADQ_METRICS_TOKEN"),
        "{err}"
    );
    let token = "t".repeat(32);
    assert!(load("production", &[("LEADQ_METRICS_TOKEN", &token)], true).is_ok());
    assert!(load(
        "production",
        &[("LEADQ_METRICS_ADDR", "10.0.0.5:9090")],
        true
    )
    .is_ok());
    // Development keeps /metrics open by default; `leadq migrate` serves none.
    assert!(load("development", &[], true).is_ok());
    assert!(load("production", &[], false).is_ok());
}

#[test]
fn secrets_come_from_files_and_never_print() {
    let dir = std::env::temp_dir().join(format!("leadq-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db");
    std::fs::write(&path, "postgres://u:s3cret-pw@localhost/db\n").unwrap();
    let s = Settings::load(
        &vars(&[
            ("DATABASE_URL_FILE", path.to_str().unwrap()),
            ("REDIS_URL", "redis://:redispw@127.0.0.1:6379/"),
        ]),
        ALL,
        KINDS,
    )
    .unwrap();
    assert_eq!(
        s.database_url().expose(),
        "postgres://u:s3cret-pw@localhost/db"
    );
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("s3cret-pw") && !debug.contains("redispw"),
        "{debug}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_secret_and_its_file_variant_together_are_refused() {
    let err = Settings::load(
        &vars(&[
            ("DATABASE_URL", "postgres://a/b"),
            ("DATABASE_URL_FILE", "/x"),
            ("REDIS_URL", "redis://127.0.0.1/"),
        ]),
        ALL,
        KINDS,
    )
    .unwrap_err();
    assert!(err.to_string().contains("both set"));
}

#[test]
fn defaults_apply_and_kind_overrides_are_read() {
    let s = Settings::load(
        &vars(&[
            ("DATABASE_URL", "postgres://a/b"),
            ("REDIS_URL", "redis://127.0.0.1/"),
            ("LEADQ_LEAD_SCORE_MAX_ATTEMPTS", "3"),
        ]),
        ALL,
        KINDS,
    )
    .unwrap();
    assert_eq!(s.api_addr.to_string(), API_ADDR_DEFAULT);
    assert_eq!(s.worker_addr.to_string(), WORKER_ADDR_DEFAULT);
    let k = &s.queue.kinds["lead_score"];
    assert_eq!((k.max_attempts, k.concurrency), (3, 8));
    assert_eq!(
        s.queue.worker_kinds,
        ["lead_score"],
        "every kind when unset"
    );
}

#[test]
fn cron_expressions_take_five_fields_or_six_with_seconds() {
    use chrono::TimeZone as _;
    let at = chrono::Utc
        .with_ymd_and_hms(2026, 11, 23, 10, 2, 30)
        .unwrap();
    let next = |p: &str| parse_cron(p).unwrap().after(&at).next().unwrap();
    assert_eq!(
        next("*/5 * * * *"),
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 5, 0)
            .unwrap()
    );
    assert_eq!(
        next("*/10 * * * * *"),
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 2, 40)
            .unwrap()
    );
    assert!(parse_cron("* * *").is_err());
    assert!(parse_cron("61 * * * *").is_err());
}

#[test]
fn job_runs_are_kept_long_enough_for_the_billing_reconciliation() {
    let load = |extra: &[(&str, &str)]| {
        let mut v = vec![
            ("DATABASE_URL", "postgres://a/b"),
            ("REDIS_URL", "redis://127.0.0.1/"),
        ];
        v.extend_from_slice(extra);
        Settings::load(&vars(&v), ALL, KINDS)
    };
    let err = load(&[("LEADQ_JOB_RUNS_KEEP_DAYS", "1")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("LEADQ_JOB_RUNS_KEEP_DAYS must be at least 2 while billing_reconcile runs"),
        "{err}"
    );
    assert!(load(&[("LEADQ_JOB_RUNS_KEEP_DAYS", "2")]).is_ok());
    assert!(load(&[
        ("LEADQ_JOB_RUNS_KEEP_DAYS", "1"),
        ("LEADQ_SCHEDULE_BILLING_RECONCILE", "off")
    ])
    .is_ok());
}
