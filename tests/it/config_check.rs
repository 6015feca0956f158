//! `leadq config check`: the deploy-time pre-flight (and what `scripts/check-deploy` runs with
//! each Kubernetes container's environment). It loads exactly what the command would, reports
//! every problem at once, and connects to nothing (the hosts below do not resolve).

use std::process::{Command, Output};

const KEYRING: &str = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn config_check(role: &str, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadq"))
        .args(["config", "check", role])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()
        .expect("run leadq config check")
}

#[test]
fn a_valid_worker_configuration_names_its_kinds_without_connecting() {
    let out = config_check(
        "worker",
        &[
            ("DATABASE_URL", "postgres://leadq:pw@db.invalid/leadq"),
            ("REDIS_URL", "redis://redis.invalid:6379/"),
            ("LEADQ_SIGNING_KEYS", KEYRING),
            ("LEADQ_DATA_KEYS", KEYRING),
            ("LEADQ_AUDIT_KEYS", KEYRING),
            ("LEADQ_PII_INDEX_KEYS", KEYRING),
            ("LEADQ_WORKER_KINDS", "crm_sync,crm_erase"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {out:?}");
    assert!(
        stdout.contains("configuration valid for worker of crm_sync,crm_erase"),
        "{stdout}"
    );
}

#[test]
fn every_problem_is_listed_once_and_no_secret_is_echoed() {
    let out = config_check(
        "api",
        &[
            (
                "DATABASE_URL",
                "postgres://leadq:hunter2-secret@db.invalid/leadq",
            ),
            ("LEADQ_SIGNING_KEYS", "k1:c2hvcnQ="),
            ("LEADQ_WORKER_KINDS", "lead_scor"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "REDIS_URL is required",
        "LEADQ_SIGNING_KEYS is invalid",
        "LEADQ_DATA_KEYS is required",
        "LEADQ_WORKER_KINDS names an unknown kind \"lead_scor\"",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from {stderr}");
    }
    assert!(!stderr.contains("hunter2"), "{stderr}");

    // migrate needs only the database: the same environment is enough once Redis is absent.
    let out = config_check(
        "migrate",
        &[("DATABASE_URL", "postgres://leadq:pw@db.invalid/leadq")],
    );
    assert!(out.status.success(), "{out:?}");
}
