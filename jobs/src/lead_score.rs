//! `lead_score`: merge a change into a lead (from the API or the Telegram bot), score it.
//!
//! The merge, the scoring ([`crate::scoring`]) and the versioning live in [`crate::leads`];
//! this module holds the payload, its validation, the handler and the right to be forgotten.
//! The handler is idempotent: the lead is keyed by `(tenant_id, external_id)` and a replayed
//! change creates no new version.

use std::collections::BTreeMap;

use apalis_core::task::data::Data;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::leads;
use crate::Deps;
use leadq_platform::audit::{self, AuditEntry};
use leadq_platform::db::{self, Scope};
use leadq_queue::backend::Job;
use leadq_queue::error::JobError;

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
    /// The campaign that brought the lead (e.g. the Telegram `/start` payload). The first one
    /// recorded is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// A free-text answer to whichever questionnaire question is still open
    /// ([`crate::scoring::QUESTIONNAIRE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_answer: Option<String>,
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
        } else if !leadq_queue::envelope::valid_id(&self.external_id) {
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
        if let Some(c) = &self.campaign {
            if c.is_empty() || c.len() > 64 || c.chars().any(char::is_control) {
                errs.push(FieldError {
                    field: "campaign".into(),
                    code: "invalid_format",
                });
            }
        }
        if let Some(t) = &self.next_answer {
            check_len(&mut errs, "next_answer", t, 2000);
        }
        errs
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
    Queue(#[from] leadq_queue::QueueError),
}

/// Right to be forgotten: deletes the lead `external_id` of `tenant` from PostgreSQL, leaves a
/// tombstone (so no job made before now can recreate it), removes its pending and
/// dead-lettered jobs from Redis, and audits a pseudonymous record (the lead's uuid, no PII).
/// Idempotent: running it again is safe and finishes an interrupted erasure.
pub async fn erase(
    pool: &PgPool,
    queue: &leadq_queue::Queue,
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
    // Every kind whose payload names the lead by `external_id`.
    let (mut jobs_removed, mut jobs_running) = (0, 0);
    for kind in [crate::kinds::LEAD_SCORE, crate::kinds::CHATWOOT_EVENT] {
        let (removed, running) = queue
            .erase_where(kind, |e| {
                e.tenant_id == tenant
                    && e.payload.get("external_id").and_then(|v| v.as_str()) == Some(external_id)
            })
            .await?;
        jobs_removed += removed;
        jobs_running += running;
    }
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
    deps.sealer
        .open_in_place(meta.tenant_id, "email", &mut lead.email)?;
    deps.sealer
        .open_in_place(meta.tenant_id, "phone", &mut lead.phone)?;
    // The queue is not a trust boundary: validate again.
    if let Some(first) = lead.validate().first() {
        return Err(JobError::permanent(
            "invalid_payload",
            anyhow::anyhow!("invalid field {} ({})", first.field, first.code),
        ));
    }
    let mut tx = db::begin(pool, Scope::Tenant(meta.tenant_id)).await?;
    if meta.shadow {
        // Shadow mode: record what would have happened, change nothing else.
        let s = leads::preview(&mut tx, meta.tenant_id, &lead).await?;
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
    let Some(applied) = leads::apply(&mut tx, meta, &lead).await? else {
        tracing::info!("Skipping a job for a lead erased after the job was made.");
        return Ok(());
    };
    if applied.changed {
        audit::record(
            &mut *tx,
            &AuditEntry {
                tenant_id: Some(meta.tenant_id),
                actor: &meta.user_id,
                action: "lead.score",
                subject: &format!("lead:{}", applied.lead_id),
                outcome: "ok",
                correlation_id: &meta.correlation_id,
                details: serde_json::json!({
                    "job_id": meta.job_id, "attempt": meta.attempt,
                    "version": applied.version,
                    "score": applied.score.score, "tier": applied.score.tier,
                }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    if let Some(version) = applied.sync {
        crate::crm_sync::request(&deps.queue, meta, applied.lead_id, version).await?;
    }
    tracing::info!(
        score = applied.score.score,
        tier = applied.score.tier.as_str(),
        version = applied.version,
        changed = applied.changed,
        "Lead scored."
    );
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
            campaign: None,
            next_answer: None,
        }
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
