//! `lead_score`: qualify a lead collected by the Telegram bot, store it with its score.
//!
//! The score is deterministic and explainable: a sum of points from fixed rules, each listed
//! in `reasons` so a salesperson can see *why* a lead is hot. The handler is idempotent: it
//! upserts the lead by `(tenant_id, external_id)`, so a job run twice leaves one lead.

use std::collections::BTreeMap;

use apalis_core::task::data::Data;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::error::JobError;
use crate::queue::backend::Job;
use crate::Deps;
use leadq_platform::audit::{self, AuditEntry};
use leadq_platform::db::{self, Scope};

/// A lead as a producer sends it. Also the `lead_score` payload, where `email` and `phone` are
/// sealed ([`crate::pii`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeadInput {
    /// The producer's id of the lead (e.g. `tg-<telegram user id>`), unique per tenant.
    pub external_id: String,
    /// Where the lead came from (`telegram`, `chatwoot`, `web`, …).
    pub source: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Messenger user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Questionnaire answers: `budget`, `timeline`, `company_size`, `need`, and any others.
    #[serde(default)]
    pub answers: BTreeMap<String, String>,
}

/// One problem with a submitted lead.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// The offending field (`answers.budget` for nested ones).
    pub field: String,
    /// Stable code: `required`, `too_long`, `invalid_format`, `too_many`.
    pub code: &'static str,
}

const MAX_ANSWERS: usize = 50;

fn check_len(errs: &mut Vec<FieldError>, field: &str, v: &str, max: usize) {
    if v.chars().count() > max {
        errs.push(FieldError {
            field: field.into(),
            code: "too_long",
        });
    }
}

fn plausible_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

fn plausible_phone(p: &str) -> bool {
    let digits = p.chars().filter(|c| c.is_ascii_digit()).count();
    (7..=15).contains(&digits)
        && p.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
}

impl LeadInput {
    /// Every problem with the lead, empty when it is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.external_id.trim().is_empty() {
            errs.push(FieldError {
                field: "external_id".into(),
                code: "required",
            });
        } else if !crate::envelope::valid_id(&self.external_id) {
            errs.push(FieldError {
                field: "external_id".into(),
                code: "invalid_format",
            });
        }
        if self.source.trim().is_empty() {
            errs.push(FieldError {
                field: "source".into(),
                code: "required",
            });
        } else if self.source.len() > 32
            || !self
                .source
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            errs.push(FieldError {
                field: "source".into(),
                code: "invalid_format",
            });
        }
        if let Some(n) = &self.name {
            check_len(&mut errs, "name", n, 200);
        }
        if let Some(u) = &self.username {
            check_len(&mut errs, "username", u, 64);
        }
        if let Some(e) = &self.email {
            if e.len() > 254 || !plausible_email(e) {
                errs.push(FieldError {
                    field: "email".into(),
                    code: "invalid_format",
                });
            }
        }
        if let Some(p) = &self.phone {
            if !plausible_phone(p) {
                errs.push(FieldError {
                    field: "phone".into(),
                    code: "invalid_format",
                });
            }
        }
        if self.answers.len() > MAX_ANSWERS {
            errs.push(FieldError {
                field: "answers".into(),
                code: "too_many",
            });
        }
        for (k, v) in &self.answers {
            check_len(&mut errs, "answers", k, 64);
            check_len(&mut errs, &format!("answers.{k}"), v, 2000);
        }
        errs
    }
}

/// Lead temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// 70 and above: call today.
    Hot,
    /// 40 to 69.
    Warm,
    /// Below 40.
    Cold,
}

impl Tier {
    /// The tier of a score.
    pub fn of(score: u8) -> Self {
        match score {
            70.. => Tier::Hot,
            40..=69 => Tier::Warm,
            _ => Tier::Cold,
        }
    }

    /// Its name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }
}

/// One rule's contribution to a score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reason {
    /// The rule (`budget`, `timeline`, `company_size`, `need`, `contact`).
    pub rule: String,
    /// Points awarded.
    pub points: u8,
    /// What the rule saw, in words.
    pub detail: String,
}

/// A score with its explanation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Score {
    /// 0-100.
    pub score: u8,
    /// Tier of the score.
    pub tier: Tier,
    /// One entry per rule.
    pub reasons: Vec<Reason>,
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

fn reason(rule: &str, points: u8, detail: impl Into<String>) -> Reason {
    Reason {
        rule: rule.into(),
        points,
        detail: detail.into(),
    }
}

fn budget_points(raw: Option<&String>) -> Reason {
    let Some(raw) = raw else {
        return reason("budget", 0, "no budget given");
    };
    // Accept bands ("10k_50k", "50k+") and plain amounts ("20000", "$20k").
    let n = norm(raw);
    let amount = {
        let digits: String = n.chars().filter(|c| c.is_ascii_digit()).collect();
        let base: u64 = digits.parse().unwrap_or(0);
        if n.contains('k') {
            base.saturating_mul(1000)
        } else {
            base
        }
    };
    let top = n.ends_with('+') || n.contains("more") || n.contains("over");
    match (top, amount) {
        (true, a) if a >= 50_000 => reason("budget", 30, "budget 50k or more"),
        (_, a) if a >= 50_000 => reason("budget", 30, "budget 50k or more"),
        (_, a) if a >= 10_000 => reason("budget", 20, "budget 10k-50k"),
        (_, a) if a > 0 => reason("budget", 5, "budget under 10k"),
        _ => reason("budget", 0, "budget not understood"),
    }
}

fn timeline_points(raw: Option<&String>) -> Reason {
    let Some(raw) = raw else {
        return reason("timeline", 0, "no timeline given");
    };
    match norm(raw).as_str() {
        "now" | "asap" | "this_week" | "this_month" | "immediately" => {
            reason("timeline", 25, "buying this month")
        }
        "this_quarter" | "1_3_months" | "next_month" | "next_quarter" => {
            reason("timeline", 15, "buying this quarter")
        }
        "this_year" | "later" | "6_months" | "3_6_months" | "next_year" => {
            reason("timeline", 5, "buying later")
        }
        _ => reason("timeline", 0, "timeline not understood"),
    }
}

fn company_points(raw: Option<&String>) -> Reason {
    let Some(raw) = raw else {
        return reason("company_size", 0, "no company size given");
    };
    let n = norm(raw);
    let lower: u64 = n
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match lower {
        201.. => reason("company_size", 20, "company of 200+ people"),
        51..=200 => reason("company_size", 15, "company of 51-200 people"),
        11..=50 => reason("company_size", 10, "company of 11-50 people"),
        1..=10 => reason("company_size", 5, "company of 1-10 people"),
        _ => reason("company_size", 0, "company size not understood"),
    }
}

fn need_points(raw: Option<&String>) -> Reason {
    match raw.map(|s| s.trim().chars().count()) {
        Some(n) if n >= 20 => reason("need", 15, "need described in detail"),
        Some(n) if n > 0 => reason("need", 5, "need mentioned briefly"),
        _ => reason("need", 0, "no need described"),
    }
}

/// Scores a lead. Pure and deterministic: the same lead always gets the same score.
pub fn score(lead: &LeadInput) -> Score {
    let a = &lead.answers;
    let contact = if lead.email.is_some() || lead.phone.is_some() {
        reason("contact", 10, "reachable by email or phone")
    } else {
        reason("contact", 0, "no email or phone")
    };
    let reasons = vec![
        budget_points(a.get("budget")),
        timeline_points(a.get("timeline")),
        company_points(a.get("company_size")),
        need_points(a.get("need")),
        contact,
    ];
    let total: u32 = reasons.iter().map(|r| u32::from(r.points)).sum();
    let score = total.min(100) as u8;
    Score {
        score,
        tier: Tier::of(score),
        reasons,
    }
}

/// What an erasure removed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Erased {
    /// The lead existed in PostgreSQL and was deleted.
    pub lead_deleted: bool,
    /// Queued or dead-lettered jobs carrying the lead's data that were removed from Redis.
    pub jobs_removed: u64,
    /// Jobs running right now; their handler sees the tombstone and writes nothing.
    pub jobs_running: u64,
}

impl Erased {
    /// Whether there was anything to erase.
    pub fn found_anything(&self) -> bool {
        self.lead_deleted || self.jobs_removed > 0 || self.jobs_running > 0
    }
}

/// Errors of an erasure.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The database failed (nothing was erased from Redis).
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Redis failed after the database erasure committed; run the erasure again.
    #[error("queue error")]
    Queue(#[from] crate::queue::QueueError),
}

/// Right to be forgotten: deletes the lead `external_id` of `tenant` from PostgreSQL, leaves a
/// tombstone (so no job made before now can recreate it), removes its pending and
/// dead-lettered jobs from Redis, and audits a pseudonymous record (the lead's uuid, no PII).
/// Idempotent: running it again is safe and finishes an interrupted erasure.
pub async fn erase(
    pool: &PgPool,
    queue: &crate::queue::Queue,
    tenant: uuid::Uuid,
    external_id: &str,
    actor: &str,
    correlation_id: &str,
) -> Result<Erased, EraseError> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    sqlx::query(
        "insert into erasures (tenant_id, external_id) values ($1, $2)
         on conflict (tenant_id, external_id) do update set erased_at = now()",
    )
    .bind(tenant)
    .bind(external_id)
    .execute(&mut *tx)
    .await?;
    let lead_id: Option<uuid::Uuid> = sqlx::query_scalar(
        "delete from leads where tenant_id = $1 and external_id = $2 returning id",
    )
    .bind(tenant)
    .bind(external_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let (jobs_removed, jobs_running) = queue
        .erase_where(crate::kinds::LEAD_SCORE, |e| {
            e.tenant_id == tenant
                && e.payload.get("external_id").and_then(|v| v.as_str()) == Some(external_id)
        })
        .await?;
    let erased = Erased {
        lead_deleted: lead_id.is_some(),
        jobs_removed,
        jobs_running,
    };
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    audit::record(
        &mut *tx,
        &AuditEntry {
            tenant_id: Some(tenant),
            actor,
            action: "lead.erase",
            subject: &lead_id.map_or_else(|| "lead:unknown".to_owned(), |id| format!("lead:{id}")),
            outcome: "ok",
            correlation_id,
            details: serde_json::to_value(&erased).unwrap_or_default(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(erased)
}

/// The `lead_score` handler.
pub async fn run(job: Job<LeadInput>, deps: Data<Deps>) -> Result<(), JobError> {
    let meta = &job.meta;
    let pool = &deps.pool;
    // The tenant and the principal were checked by the authorization layer
    // (`crate::authz`) before this runs.
    // Personal data travels sealed; open it for this tenant only.
    let mut lead = job.payload;
    for (field, value) in [("email", &mut lead.email), ("phone", &mut lead.phone)] {
        if let Some(sealed) = value.as_deref() {
            let plain = deps
                .sealer
                .open(meta.tenant_id, field, sealed)
                .map_err(|e| {
                    JobError::permanent("sealed_data_unreadable", anyhow::anyhow!("{field}: {e}"))
                })?;
            *value = Some(plain);
        }
    }
    // The queue is not a trust boundary: validate again.
    if let Some(first) = lead.validate().first() {
        return Err(JobError::permanent(
            "invalid_payload",
            anyhow::anyhow!("invalid field {} ({})", first.field, first.code),
        ));
    }
    let s = score(&lead);
    let mut tx = db::begin(pool, Scope::Tenant(meta.tenant_id)).await?;
    if meta.shadow {
        // Shadow mode: record what would have happened, change nothing else.
        audit::record(
            &mut *tx,
            &AuditEntry {
                tenant_id: Some(meta.tenant_id),
                actor: &meta.user_id,
                action: "lead.score_shadow",
                subject: &format!("job:{}", meta.job_id),
                outcome: "ok",
                correlation_id: &meta.correlation_id,
                details: serde_json::json!({"would_score": s.score, "would_tier": s.tier}),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            score = s.score,
            "Lead scored in shadow mode; nothing stored."
        );
        return Ok(());
    }
    // A job made before the lead was erased must not bring its personal data back.
    let erased_at: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "select erased_at from erasures where tenant_id = $1 and external_id = $2",
    )
    .bind(meta.tenant_id)
    .bind(&lead.external_id)
    .fetch_optional(&mut *tx)
    .await?;
    if erased_at.is_some_and(|at| meta.timestamp <= at) {
        tracing::info!("Skipping a job for a lead erased after the job was made.");
        return Ok(());
    }
    let lead_id: uuid::Uuid = sqlx::query_scalar(
        "insert into leads (tenant_id, external_id, source, name, username, phone, email, answers,
                            score, tier, reasons, scored_at, last_message_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now(), $12)
         on conflict (tenant_id, external_id) do update set
             source = excluded.source,
             name = coalesce(excluded.name, leads.name),
             username = coalesce(excluded.username, leads.username),
             phone = coalesce(excluded.phone, leads.phone),
             email = coalesce(excluded.email, leads.email),
             answers = leads.answers || excluded.answers,
             score = excluded.score, tier = excluded.tier, reasons = excluded.reasons,
             scored_at = now(), last_message_id = excluded.last_message_id, updated_at = now()
         returning id",
    )
    .bind(meta.tenant_id)
    .bind(&lead.external_id)
    .bind(&lead.source)
    .bind(&lead.name)
    .bind(&lead.username)
    .bind(&lead.phone)
    .bind(&lead.email)
    .bind(sqlx::types::Json(&lead.answers))
    .bind(i32::from(s.score))
    .bind(s.tier.as_str())
    .bind(sqlx::types::Json(&s.reasons))
    .bind(&meta.message_id)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        &AuditEntry {
            tenant_id: Some(meta.tenant_id),
            actor: &meta.user_id,
            action: "lead.score",
            subject: &format!("lead:{lead_id}"),
            outcome: "ok",
            correlation_id: &meta.correlation_id,
            details: serde_json::json!({
                "job_id": meta.job_id, "attempt": meta.attempt,
                "score": s.score, "tier": s.tier,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(score = s.score, tier = s.tier.as_str(), "Lead scored.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(answers: &[(&str, &str)], email: Option<&str>) -> LeadInput {
        LeadInput {
            external_id: "tg-1".into(),
            source: "telegram".into(),
            name: Some("Ada".into()),
            username: None,
            phone: None,
            email: email.map(Into::into),
            answers: answers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_lead_with_everything_is_hot_and_explained() {
        let s = score(&lead(
            &[
                ("budget", "50k+"),
                ("timeline", "this_month"),
                ("company_size", "51-200"),
                ("need", "We need a CRM integration for our sales team"),
            ],
            Some("ada@example.com"),
        ));
        assert_eq!(s.score, 30 + 25 + 15 + 15 + 10);
        assert_eq!(s.tier, Tier::Hot);
        assert_eq!(s.reasons.len(), 5);
        assert!(s.reasons.iter().all(|r| !r.detail.is_empty()));
    }

    #[test]
    fn an_empty_lead_is_cold_with_zero() {
        let s = score(&lead(&[], None));
        assert_eq!((s.score, s.tier), (0, Tier::Cold));
    }

    #[test]
    fn the_score_is_deterministic_and_tiers_have_fixed_edges() {
        let l = lead(&[("budget", "20000"), ("timeline", "this quarter")], None);
        assert_eq!(score(&l), score(&l));
        assert_eq!(score(&l).score, 35);
        assert_eq!(Tier::of(70), Tier::Hot);
        assert_eq!(Tier::of(69), Tier::Warm);
        assert_eq!(Tier::of(40), Tier::Warm);
        assert_eq!(Tier::of(39), Tier::Cold);
    }

    #[test]
    fn validation_reports_every_bad_field_with_a_code() {
        let mut l = lead(&[], Some("not-an-email"));
        l.external_id = String::new();
        l.source = "Tele gram".into();
        l.phone = Some("12".into());
        let errs = l.validate();
        let got: Vec<_> = errs.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            got,
            vec![
                ("external_id", "required"),
                ("source", "invalid_format"),
                ("email", "invalid_format"),
                ("phone", "invalid_format"),
            ]
        );
        assert!(lead(&[], Some("a@b.co")).validate().is_empty());
    }
}
