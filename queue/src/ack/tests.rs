//! The outcome classification: every kind of handler result → how the job is settled and the
//! error code it is recorded with.

use std::time::Duration;

use apalis_core::error::BoxDynError;

use super::{classify, MAX_SNOOZE};
use crate::error::JobError;
use crate::Settle;

fn err(e: impl std::error::Error + Send + Sync + 'static) -> Result<(), BoxDynError> {
    Err(Box::new(e))
}

#[test]
fn a_successful_run_completes_without_a_code() {
    let (how, code) = classify(&Ok(()));
    assert!(matches!(how, Settle::Ok));
    assert_eq!(code, None);
}

#[test]
fn a_transient_error_is_retried_under_its_own_code() {
    let result = err(JobError::transient("crm_5xx", anyhow::anyhow!("502")));
    let (how, code) = classify(&result);
    assert!(matches!(how, Settle::Retry { code } if code == "crm_5xx"));
    assert_eq!(code, Some("crm_5xx"));
}

#[test]
fn a_permanent_error_is_dead_lettered_with_its_code_as_reason() {
    let result = err(JobError::permanent(
        "invalid_payload",
        anyhow::anyhow!("no id"),
    ));
    let (how, code) = classify(&result);
    assert!(matches!(how, Settle::Dead { reason, code }
        if reason == "invalid_payload" && code == "invalid_payload"));
    assert_eq!(code, Some("invalid_payload"));
}

#[test]
fn a_rate_limited_error_is_snoozed_for_exactly_the_asked_delay() {
    let result = err(JobError::RateLimited {
        code: "crm_429",
        retry_after: Duration::from_millis(7_250),
    });
    let (how, code) = classify(&result);
    assert!(matches!(how, Settle::Snooze { delay, code }
        if delay == Duration::from_millis(7_250) && code == "crm_429"));
    assert_eq!(code, Some("crm_429"));
}

#[test]
fn a_rate_limited_wait_is_at_most_a_day() {
    let result = err(JobError::RateLimited {
        code: "crm_rate_limited",
        retry_after: Duration::from_secs(u64::MAX),
    });
    let (how, _) = classify(&result);
    assert!(
        matches!(&how, Settle::Snooze { delay, .. } if *delay == MAX_SNOOZE),
        "{how:?}"
    );
}

#[test]
fn a_database_outage_waits_like_a_rate_limit_and_uses_no_attempt() {
    let result = err(JobError::from(sqlx::Error::PoolTimedOut));
    let (how, code) = classify(&result);
    assert!(
        matches!(&how, Settle::Snooze { delay, .. }
        if (Duration::from_secs(2)..Duration::from_secs(5)).contains(delay)),
        "{how:?}"
    );
    assert_eq!(code, Some("db_unavailable"));
}

#[test]
fn a_timeout_is_retried_as_timeout() {
    let result = err(tower::timeout::error::Elapsed::new());
    let (how, code) = classify(&result);
    assert!(matches!(how, Settle::Retry { code } if code == "timeout"));
    assert_eq!(code, Some("timeout"));
}

#[test]
fn an_untyped_error_is_retried_as_handler_error() {
    let result = err(std::io::Error::other("boom"));
    let (how, code) = classify(&result);
    assert!(matches!(how, Settle::Retry { code } if code == "handler_error"));
    assert_eq!(code, Some("handler_error"));
}
