//! The job catalogue: every kind, its stable name and its defaults.
//!
//! A kind's string is part of the wire format (queue keys, metrics, audit rows, dashboards):
//! it never changes, whatever the Rust types are called.

use std::time::Duration;

use leadq_platform::config::KindDefaults;

/// Qualify and score a lead.
pub const LEAD_SCORE: &str = "lead_score";
/// Change a tenant's ingest limits and quotas (operators only).
pub const UPDATE_BILLING_LIMIT: &str = "update_billing_limit";

/// Every kind this build knows, with its defaults.
pub const CATALOGUE: &[KindDefaults] = &[
    KindDefaults {
        kind: LEAD_SCORE,
        concurrency: 16,
        max_attempts: 5,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(300),
        timeout: Duration::from_secs(30),
    },
    KindDefaults {
        kind: UPDATE_BILLING_LIMIT,
        concurrency: 2,
        max_attempts: 10,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
    },
];

/// Kinds only platform operators (`operator:<name>` principals) may cause.
pub fn operator_only(kind: &str) -> bool {
    kind == UPDATE_BILLING_LIMIT
}

/// The API-key scope a principal needs to cause a job of `kind` (`None`: no key may).
pub fn required_scope(kind: &str) -> Option<&'static str> {
    match kind {
        LEAD_SCORE => Some(leadq_platform::apikey::scope::LEADS_WRITE),
        _ => None,
    }
}

/// Whether `kind` is in the catalogue.
pub fn is_known(kind: &str) -> bool {
    CATALOGUE.iter().any(|k| k.kind == kind)
}

/// The kind names.
pub fn names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|k| k.kind).collect()
}
