//! The job contract and the job handlers of leadq, and the queue engine they run on.
//!
//! `api` and `worker` both depend on this crate and never on each other: the API enqueues
//! what this crate defines, the worker runs what this crate implements.
//!
//! # Layout
//! - [`envelope`]: the versioned message every job travels in.
//! - [`kinds`]: the catalogue of job kinds (stable strings) and their defaults.
//! - [`error`]: [`JobError`], the three outcome classes a handler can return.
//! - [`queue`]: the Redis queue engine (our apalis backend), the only code that touches Redis
//!   job keys.
//! - [`health`]: readiness, queue gauges and metrics text, served by both processes.
//! - [`authz`]: consumer-side authorization of every job before its handler runs.
//! - [`pii`]: sealing of personal data in queued payloads (Redis never holds it in clear).
//! - [`signing`]: HMAC-signed envelopes, verified by the worker before anything else.
//! - [`limits`]: per-tenant ingest rate limit and daily quota.
//! - [`lead_score`]: the `lead_score` job: payload, validation, handler, erasure.
//! - [`leads`]: the lead store every lead-changing job goes through (merge, score, version,
//!   CRM sync request); [`scoring`]: the explainable rules and per-tenant weights.
//! - [`chatwoot`], [`telegram`]: the producers' contracts: verification and normalisation of
//!   their webhooks (used by the API), and the `chatwoot_event` handler.
//! - [`crm_sync`]: the `crm_sync` job (HubSpot batch upsert).
//! - [`integrations`]: per-tenant integration settings and their secrets.
//!
//! # Job catalogue
//! | kind             | payload                    | caused by                          | idempotency |
//! |------------------|----------------------------|------------------------------------|-------------|
//! | `lead_score`     | [`lead_score::LeadInput`]  | API key, Telegram webhook          | merge by `(tenant_id, external_id)`; no new version on replay |
//! | `chatwoot_event` | [`chatwoot::EventInput`]   | Chatwoot webhook                   | deduped on delivery and `(account, event, id)`; messages keyed by Chatwoot id |
//! | `crm_sync`       | [`crm_sync::SyncInput`]    | `lead_score` / `chatwoot_event` handlers | one job per lead version; synced versions are never sent again |
//! | `update_billing_limit` | [`limits::Limits`] | operators                       | absolute values |

pub mod authz;
pub mod chatwoot;
pub mod crm_sync;
pub mod deadletters;
pub mod health;
pub mod integrations;
pub mod kinds;
pub mod lead_score;
pub mod leads;
pub mod limits;
pub mod maintenance;
pub mod pii;
pub mod scoring;
pub mod telegram;
pub mod tenant_queue;

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
    /// Enqueues follow-up jobs (`crm_sync`).
    pub queue: leadq_queue::Queue,
    /// Calls the CRM ([`crm_sync::http_client`]).
    pub http: reqwest::Client,
}
