//! Operator actions: what on-call and billing do to the platform, each audited.
//!
//! # Layout
//! - [`audit_trail`]: reading the audit trail (tenants their own, operators any), with the
//!   chain's last verification.
//! - [`billing`]: billing reconciliation: signed baselines of each tenant's limits and
//!   entitlements, compared with the live configuration and the audited changes since.
//! - [`canary`]: the synthetic canary (a lead through the public API, scored) and its gauges.
//! - [`doctor`]: the release-readiness checklist behind `leadq doctor`.
//! - [`deadletters`]: list, inspect, re-drive and purge dead letters (API and CLI).
//! - [`tenant_queue`]: per-tenant queue controls (pause, resume, cap, weight), by slug, and
//!   every tenant's standing per kind.
//! - [`lookup`]: find one job by id or message id: where it is now and its runs.
//! - [`tenant_view`]: what a tenant sees of its own queues (the console's tenant page).
//! - [`maintenance`]: the recurring platform tasks the worker's scheduler fires (CRM sync
//!   reconciliation, `job_runs` reconciliation and retention, audit chain verification).
//! - [`limits`]: billing limits (ingest rate, quota) and the `update_billing_limit` job.
//! - [`overrides`]: the `leadq_tenant_override_info` gauges (which tenants run with special
//!   settings).
//! - [`security`]: the security health checks (`GET /v1/health/security`, the
//!   `leadq_security_check_ok` gauges, `leadq doctor`).

pub mod audit_trail;
pub mod billing;
pub mod canary;
pub mod deadletters;
pub mod doctor;
pub mod limits;
pub mod lookup;
pub mod maintenance;
pub mod overrides;
pub mod security;
pub mod tenant_queue;
pub mod tenant_view;
