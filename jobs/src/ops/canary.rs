//! The synthetic canary: once per firing (schedule `canary`, every minute by default), the
//! scheduler posts a synthetic lead for a dedicated canary tenant through the public HTTP API,
//! exactly as the Telegram bot would, and reads it back until it is scored. It proves the
//! whole user path (TLS and proxy in front of the API, authentication, admission, Redis, a
//! worker, PostgreSQL), which no single health check does.
//!
//! The result is kept in `platform_checks` (row `canary`) and published by every process at
//! scrape time (`leadq_platform::checks::publish_canary`) as `leadq_canary_success`, `leadq_canary_duration_seconds` and
//! `leadq_canary_last_success_timestamp_seconds`: when no worker runs, nothing runs the canary
//! and the last success ages, which is what `LeadqCanaryFailing` watches.
//!
//! The canary tenant is a real tenant (`leadq tenant create canary`) with its own API key. Its
//! jobs are left out of the per-tenant metrics (`TenantLabels`), and each run deletes its own
//! leads (`canary-…`) older than [`KEEP`], audited.

use std::time::{Duration, Instant};

use leadq_platform::config::CanarySettings;
use leadq_platform::db::{self, Scope};
use sqlx::PgPool;
use uuid::Uuid;

/// The `platform_checks` row.
pub const CHECK: &str = leadq_platform::checks::CANARY;
/// Canary leads older than this are deleted.
const KEEP: Duration = Duration::from_secs(3600);
/// How often the lead is read back while it is not scored yet.
const POLL: Duration = Duration::from_millis(250);

/// Why a canary run failed; the text is what `platform_checks.detail` says.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// The API could not be reached (no text of the error: its URL is configuration).
    #[error("the API is unreachable")]
    Unreachable,
    /// The API answered with an unexpected status.
    #[error("{step} answered {status} ({code})")]
    Refused {
        /// `POST /v1/leads` or `GET /v1/leads/{id}`.
        step: &'static str,
        /// The HTTP status.
        status: u16,
        /// The error body's `code`, when there is one.
        code: String,
    },
    /// The lead was accepted but not scored in time.
    #[error("the lead was not scored within {0:?}")]
    NotScored(Duration),
    /// The result could not be recorded.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// Runs the canary once and records the result; returns how long it took.
pub async fn run(
    pool: &PgPool,
    http: &reqwest::Client,
    settings: &CanarySettings,
    firing_ms: i64,
) -> Result<Duration, CanaryError> {
    let started = Instant::now();
    let result = post_and_wait(http, settings, firing_ms).await;
    let took = started.elapsed();
    let detail = match &result {
        Ok(()) => format!("lead posted and scored in {} ms", took.as_millis()),
        Err(e) => e.to_string(),
    };
    leadq_platform::checks::record(pool, CHECK, result.is_ok(), &detail, took).await?;
    if let Err(error) = purge(pool, &settings.tenant).await {
        tracing::warn!(error = %error, "Could not delete old canary leads; next run tries again.");
    }
    result.map(|()| took)
}

async fn post_and_wait(
    http: &reqwest::Client,
    s: &CanarySettings,
    firing_ms: i64,
) -> Result<(), CanaryError> {
    let external_id = format!("canary-{firing_ms}");
    let post = http
        .post(format!("{}/v1/leads", s.api_url))
        .bearer_auth(s.api_key.expose())
        .timeout(s.timeout)
        .json(&serde_json::json!({
            "external_id": external_id,
            "source": "canary",
            "name": "Canary",
            "answers": {"budget": "1000"},
            "message_id": external_id,
        }))
        .send()
        .await
        .map_err(|_| CanaryError::Unreachable)?;
    expect(post, "POST /v1/leads", 202).await?;
    let deadline = Instant::now() + s.timeout;
    loop {
        let get = http
            .get(format!("{}/v1/leads/{external_id}", s.api_url))
            .bearer_auth(s.api_key.expose())
            .timeout(s.timeout)
            .send()
            .await
            .map_err(|_| CanaryError::Unreachable)?;
        // 404 until the worker has written the lead.
        if get.status() != reqwest::StatusCode::NOT_FOUND {
            let lead = expect(get, "GET /v1/leads/{id}", 200).await?;
            if !lead["scored_at"].is_null() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(CanaryError::NotScored(s.timeout));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn expect(
    r: reqwest::Response,
    step: &'static str,
    want: u16,
) -> Result<serde_json::Value, CanaryError> {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    if status == want {
        return Ok(body);
    }
    Err(CanaryError::Refused {
        step,
        status,
        code: body["error"]["code"].as_str().unwrap_or("-").to_owned(),
    })
}

/// Deletes the canary's own leads (`canary-<firing>`) older than [`KEEP`] from the canary
/// tenant, audited (`canary.purge`, by `system:canary`). Only leads named as the canary names
/// them: `LEADQ_CANARY_TENANT` naming a real tenant by mistake deleted that tenant's leads,
/// every lead older than an hour, every minute, with no audit entry.
async fn purge(pool: &PgPool, slug: &str) -> Result<u64, sqlx::Error> {
    let Some(id): Option<Uuid> = sqlx::query_scalar("select id from tenants where slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(0);
    };
    let mut tx = db::begin(pool, Scope::Tenant(id)).await?;
    let n = sqlx::query(
        "delete from leads
          where tenant_id = $1 and created_at < now() - $2 and starts_with(external_id, 'canary-')",
    )
    .bind(id)
    .bind(chrono::TimeDelta::from_std(KEEP).unwrap_or_default())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n > 0 {
        leadq_platform::audit::Auditor {
            tenant_id: Some(id),
            actor: "system:canary",
            correlation_id: "canary",
        }
        .entry("canary.purge", "leads:canary-*")
        .details(serde_json::json!({ "deleted": n }))
        .record(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(n)
}
