//! The job contract and the job handlers of leadq, and the queue engine they run on.
//!
//! `api` and `worker` both depend on this crate and never on each other: the API enqueues
//! what this crate defines, the worker runs what this crate implements.
//!
//! # Layout
//! Where a new thing goes: a job kind's name and defaults in [`kinds`]; its payload and
//! handler in the domain folder it belongs to; a new neighbour in its own folder under
//! [`integrations`]; an operator action under [`ops`] (see `docs/architecture.md`).
//!
//! Shared by every kind, at the root:
//! - [`kinds`]: the catalogue of job kinds (stable strings), their defaults, who may cause them.
//! - [`authz`]: consumer-side authorization of every job before its handler runs.
//! - [`abuse`]: cross-tenant abuse detection (one principal touching many tenants).
//! - [`pii`]: sealing of personal data in queued payloads (Redis never holds it in clear).
//! - [`tenant_labels`]: the bounded `tenant` label of per-tenant metrics.
//! - [`health`]: readiness, queue gauges and the `/healthz` `/readyz` `/metrics` routes,
//!   served by both processes.
//!
//! The domains:
//! - [`lead`]: the lead store every lead-changing job goes through (merge, score, version,
//!   CRM sync request), scoring, the `lead_score` job, erasure.
//! - [`integrations`]: one folder per neighbour (`chatwoot`, `telegram`, `hubspot`) and the
//!   per-tenant settings store.
//! - [`ops`]: operator actions: dead letters, tenant queue controls, maintenance tasks,
//!   billing limits.
//!
//! Dependencies inside the crate point one way: `ops` → `integrations` → `lead` → the root
//! modules; `lead` never imports `integrations` or `ops`.
//!
//! # Job catalogue
//! | kind             | payload                    | caused by                          | idempotency |
//! |------------------|----------------------------|------------------------------------|-------------|
//! | `lead_score`     | [`lead::LeadPayload`] (v1 [`lead::LeadInput`], v2 [`lead::LeadInputV2`]) | API key, Telegram webhook | merge by `(tenant_id, external_id)`; no new version on replay |
//! | `chatwoot_event` | [`integrations::chatwoot::EventInput`] | Chatwoot webhook | deduped on delivery and `(account, event, id)`; messages keyed by Chatwoot id |
//! | `crm_sync`       | [`lead::sync::SyncInput`]  | `lead_score` / `chatwoot_event` handlers | one job per lead version; synced versions are never sent again |
//! | `update_billing_limit` | [`ops::limits::Limits`] | operators                    | absolute values |
//!
//! Every payload type says which envelope versions it reads (`leadq_queue::payload`): all but
//! `lead_score` read version 1 only; a version a payload does not read is dead-lettered
//! `unsupported_version`.

pub mod abuse;
pub mod authz;
pub mod health;
pub mod integrations;
pub mod kinds;
pub mod lead;
pub mod ops;
pub mod pii;
pub mod tenant_labels;

/// Connects a long-running process to its stores, eagerly: PostgreSQL (a pool of `pool_size`,
/// refused if the role would bypass row-level security) and Redis (signing and verifying with
/// the configured keys). A wrong URL or an unsafe role fails the process at start-up.
pub async fn connect_stores(
    settings: &leadq_platform::config::Settings,
    pool_size: u32,
) -> anyhow::Result<(sqlx::PgPool, leadq_queue::Queue)> {
    use anyhow::Context;
    let pool = leadq_platform::db::connect(settings.database_url(), pool_size)
        .await
        .context("Failed to connect to PostgreSQL")?;
    leadq_platform::db::check_runtime_role(&pool).await?;
    let signer = leadq_queue::signing::Signer::new(settings.signing_keys().clone());
    let queue = leadq_queue::Queue::connect(settings.redis_url(), settings.queue.clone(), signer)
        .await
        .context("Failed to connect to Redis")?;
    Ok((pool, queue))
}

/// What the job handlers need. Handed to workers with apalis `.data()`.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The database.
    pub pool: sqlx::PgPool,
    /// Opens the personal data sealed in payloads.
    pub sealer: pii::Sealer,
    /// Writes `lead_score` changes in batches ([`lead::group`]).
    pub group: lead::group::GroupCommit,
    /// Enqueues follow-up jobs (`crm_sync`).
    pub queue: leadq_queue::Queue,
    /// Calls the CRM ([`integrations::hubspot::http_client`]).
    pub http: reqwest::Client,
    /// The bounded `tenant` label of per-tenant metrics (CRM requests).
    pub tenants: tenant_labels::TenantLabels,
}
