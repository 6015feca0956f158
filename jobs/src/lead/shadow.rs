//! Shadow comparison: new scoring rules judged on real traffic before they go live.
//!
//! An operator gives a tenant *candidate* rules (`leadq shadow rules`). From then on every job
//! that scores one of its leads (`lead_score`, `chatwoot_event`) scores the new version twice,
//! with the live rules (what is stored, synced and shown) and with the candidate (nothing but
//! a row in `shadow_comparisons`), in the job's own transaction. Both come from one query
//! ([`Rules::load_with_candidate`]), so a tenant without candidate rules pays nothing. A job
//! whose kind runs in `shadow` mode for the tenant (`leadq tenant set-kind … shadow`) has no
//! live outcome: its would-be outcome is recorded with `live` empty.
//!
//! Agreement is about the decision, the tier: a candidate that moves a score but keeps every
//! tier agrees. `leadq shadow report` summarises the rows (agreements, the tier moves, the
//! mean score change); `leadq_shadow_comparisons_total{kind, outcome}` counts them as they
//! happen. When the report is good, the candidate becomes the live rules with
//! `leadq tenant update` and is cleared with `leadq shadow clear`.

use std::collections::BTreeMap;

use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics::{self as m, label};
use leadq_queue::envelope::JobMeta;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::lead::scoring::{Rules, Score};

/// Errors of the shadow commands.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// No tenant has this slug.
    #[error("no tenant with slug {0:?}")]
    UnknownTenant(String),
    /// The candidate rules are invalid.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

fn outcome(s: &Score) -> serde_json::Value {
    serde_json::json!({ "score": s.score, "tier": s.tier.as_str() })
}

/// Records the comparison for a change the lead store made (a job of `kind`), in its
/// transaction: only when it made a new version and the tenant has candidate rules
/// (`applied.candidate`), else nothing. The one rule every path that writes a lead version
/// follows (the group commit, a job alone, a Chatwoot event alone).
pub async fn record_applied(
    conn: &mut PgConnection,
    meta: &JobMeta,
    kind: &'static str,
    applied: &crate::lead::store::Applied,
) -> Result<(), sqlx::Error> {
    let (true, Some(candidate)) = (applied.changed, &applied.candidate) else {
        return Ok(());
    };
    let subject = format!("lead:{}", applied.lead_id);
    record(conn, meta, kind, &subject, Some(&applied.score), candidate).await
}

/// Records one job's outcomes (a job of `kind`), live (`None` in shadow mode) and shadow, in its transaction.
pub async fn record(
    conn: &mut PgConnection,
    meta: &JobMeta,
    kind: &'static str,
    subject: &str,
    live: Option<&Score>,
    shadow: &Score,
) -> Result<(), sqlx::Error> {
    let agrees = live.map(|l| l.tier == shadow.tier);
    sqlx::query(
        "insert into shadow_comparisons (tenant_id, kind, job_id, subject, live, shadow, agrees)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(meta.tenant_id)
    .bind(kind)
    .bind(meta.job_id)
    .bind(subject)
    .bind(live.map(outcome))
    .bind(outcome(shadow))
    .bind(agrees)
    .execute(conn)
    .await?;
    let result = match agrees {
        Some(true) => "agree",
        Some(false) => "disagree",
        None => "shadow_only",
    };
    metrics::counter!(m::SHADOW_COMPARISONS_TOTAL,
        label::KIND => kind, label::OUTCOME => result)
    .increment(1);
    Ok(())
}

async fn tenant_id(pool: &PgPool, slug: &str) -> Result<Uuid, ShadowError> {
    leadq_platform::tenant::id_by_slug(pool, slug)
        .await?
        .ok_or_else(|| ShadowError::UnknownTenant(slug.to_owned()))
}

/// What `leadq shadow rules` changes: the candidate starts as a copy of the live rules.
#[derive(Debug, Clone, Default)]
pub struct CandidateUpdate {
    /// Weights to set, rule → points.
    pub weights: BTreeMap<String, u8>,
    /// The hot threshold.
    pub hot_threshold: Option<u8>,
    /// The warm threshold.
    pub warm_threshold: Option<u8>,
}

/// Sets the tenant's candidate rules (the live rules with `update` applied); audited. Returns
/// them.
pub async fn set_candidate(
    pool: &PgPool,
    slug: &str,
    actor: &str,
    update: &CandidateUpdate,
) -> Result<Rules, ShadowError> {
    let tenant = tenant_id(pool, slug).await?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let mut rules = Rules::load(&mut tx, tenant).await?;
    rules.weights.extend(update.weights.clone());
    rules.hot_threshold = update.hot_threshold.unwrap_or(rules.hot_threshold);
    rules.warm_threshold = update.warm_threshold.unwrap_or(rules.warm_threshold);
    rules
        .validate()
        .map_err(|e| ShadowError::Invalid(e.to_string()))?;
    sqlx::query(
        "insert into scoring_rules_candidate
             (tenant_id, weights, hot_threshold, warm_threshold, set_by)
         values ($1, $2, $3, $4, $5)
         on conflict (tenant_id) do update set weights = excluded.weights,
             hot_threshold = excluded.hot_threshold, warm_threshold = excluded.warm_threshold,
             set_by = excluded.set_by, set_at = now()",
    )
    .bind(tenant)
    .bind(sqlx::types::Json(&rules.weights))
    .bind(i32::from(rules.hot_threshold))
    .bind(i32::from(rules.warm_threshold))
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    Auditor {
        tenant_id: Some(tenant),
        actor,
        correlation_id: "cli",
    }
    .entry("shadow.rules_set", &format!("tenant:{tenant}"))
    .details(serde_json::json!({ "rules": &rules }))
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rules)
}

/// Removes the tenant's candidate rules (comparisons stop; the recorded ones stay); audited.
/// Returns whether there were any.
pub async fn clear_candidate(pool: &PgPool, slug: &str, actor: &str) -> Result<bool, ShadowError> {
    let tenant = tenant_id(pool, slug).await?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let n = sqlx::query("delete from scoring_rules_candidate where tenant_id = $1")
        .bind(tenant)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n > 0 {
        Auditor {
            tenant_id: Some(tenant),
            actor,
            correlation_id: "cli",
        }
        .entry("shadow.rules_cleared", &format!("tenant:{tenant}"))
        .record(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(n > 0)
}

/// `leadq shadow report`: a tenant's comparisons of one kind since a moment.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The tenant's slug.
    pub tenant: String,
    /// The job kind.
    pub kind: String,
    /// Jobs that ran both ways.
    pub compared: i64,
    /// Of those, the ones whose tier was the same.
    pub agree: i64,
    /// Of those, the ones whose tier differed.
    pub disagree: i64,
    /// Jobs that ran in shadow mode only (no live outcome).
    pub shadow_only: i64,
    /// Mean of shadow score − live score over the compared jobs (`None` with none).
    pub mean_score_change: Option<f64>,
    /// Tier moves of the disagreements, `"live->shadow"` → jobs, most frequent first.
    pub moves: Vec<(String, i64)>,
}

/// Summarises the tenant's comparisons of `kind` since `since`.
pub async fn report(
    pool: &PgPool,
    slug: &str,
    kind: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Report, ShadowError> {
    let tenant = tenant_id(pool, slug).await?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let (compared, agree, shadow_only, mean): (i64, i64, i64, Option<f64>) = sqlx::query_as(
        "select count(*) filter (where live is not null),
                count(*) filter (where agrees),
                count(*) filter (where live is null),
                avg((shadow->>'score')::int - (live->>'score')::int)::float8
           from shadow_comparisons
          where tenant_id = $1 and kind = $2 and created_at >= $3",
    )
    .bind(tenant)
    .bind(kind)
    .bind(since)
    .fetch_one(&mut *tx)
    .await?;
    let moves: Vec<(String, i64)> = sqlx::query_as(
        "select (live->>'tier') || '->' || (shadow->>'tier'), count(*)
           from shadow_comparisons
          where tenant_id = $1 and kind = $2 and created_at >= $3 and not agrees
          group by 1 order by 2 desc, 1",
    )
    .bind(tenant)
    .bind(kind)
    .bind(since)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Report {
        tenant: slug.to_owned(),
        kind: kind.to_owned(),
        compared,
        agree,
        disagree: compared - agree,
        shadow_only,
        mean_score_change: mean,
        moves,
    })
}
