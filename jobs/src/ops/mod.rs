//! Operator actions: what on-call and billing do to the platform, each audited.
//!
//! # Layout
//! - [`deadletters`]: list, inspect, re-drive and purge dead letters (API and CLI).
//! - [`tenant_queue`]: per-tenant queue controls (pause, resume, cap, weight), by slug.
//! - [`maintenance`]: the recurring platform tasks the worker's scheduler fires (CRM sync
//!   reconciliation, `job_runs` reconciliation and retention).
//! - [`limits`]: billing limits (ingest rate, quota) and the `update_billing_limit` job.

pub mod deadletters;
pub mod limits;
pub mod maintenance;
pub mod tenant_queue;
