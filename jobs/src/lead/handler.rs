//! The `lead_score` job: open the sealed contact fields, validate again, apply the change
//! through the lead store, audit it, and ask for a CRM sync when the store says so. Idempotent:
//! the lead is keyed by `(tenant_id, external_id)` and a replayed change makes no new version.
//!
//! It reads payload versions 1 and 2 ([`LeadPayload`]; any other is dead-lettered
//! `unsupported_version` before it gets here). Version 2 is normalized to the version 1 shape
//! first, so both take the same path; the consent a version 2 job carries is recorded in the
//! same transaction as the change, as a `lead.consent` audit entry (what was agreed to and
//! when, the job id; no personal data), so the evidence is tamper-evident. Like the change, it
//! is not recorded in shadow mode or for a lead erased after the job was made. A run repeated
//! after a lost acknowledgement may record it twice, under the same `job_id`.

use apalis_core::task::data::Data;
use leadq_platform::db::{self, Scope};
use leadq_queue::backend::Job;
use leadq_queue::envelope::JobMeta;
use leadq_queue::error::JobError;

use crate::lead::store::Applied;
use crate::lead::{shadow, store, sync, Consent, LeadInput, LeadPayload};
use crate::pii::field;
use crate::Deps;

/// The `lead_score` handler.
pub async fn run(job: Job<LeadPayload>, deps: Data<Deps>) -> Result<(), JobError> {
    let meta = &job.meta;
    let pool = &deps.pool;
    // The tenant and the principal were checked by the authorization layer
    // (`crate::authz`) before this runs.
    // Personal data travels sealed; open it for this tenant only.
    let (mut lead, consent) = job.payload.into_v1();
    deps.sealer
        .open_in_place(meta.tenant_id, field::EMAIL, &mut lead.email)?;
    deps.sealer
        .open_in_place(meta.tenant_id, field::PHONE, &mut lead.phone)?;
    // The queue is not a trust boundary: validate again.
    let mut errs = lead.validate();
    errs.extend(consent.iter().flat_map(Consent::validate));
    if let Some(first) = errs.first() {
        return Err(JobError::permanent(
            "invalid_payload",
            anyhow::anyhow!("invalid field {} ({})", first.field, first.code),
        ));
    }
    if meta.shadow {
        // Shadow mode: record what would have happened, change nothing else.
        let mut tx = db::begin(pool, Scope::Tenant(meta.tenant_id)).await?;
        let s = store::preview(&mut tx, &deps.sealer, meta.tenant_id, &lead).await?;
        meta.auditor()
            .entry("lead.score_shadow", &format!("job:{}", meta.job_id))
            .details(serde_json::json!({"would_score": s.score, "would_tier": s.tier}))
            .record(&mut *tx)
            .await?;
        shadow::record(
            &mut tx,
            meta,
            crate::kinds::LEAD_SCORE,
            &format!("job:{}", meta.job_id),
            None,
            &s,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            score = s.score,
            "Lead scored in shadow mode; nothing stored."
        );
        return Ok(());
    }
    // With the tenant's other ready jobs, in one transaction (`crate::lead::group`).
    let applied = deps.group.apply(meta.clone(), lead, consent).await?;
    let Some(applied) = applied else {
        tracing::info!("Skipping a job for a lead erased after the job was made.");
        return Ok(());
    };
    if let Some(version) = applied.sync {
        sync::request(&deps.queue, meta, applied.lead_id, version).await?;
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

/// The change of one job in a transaction of its own: the lead store's [`store::apply`], the
/// job's audit rows ([`audit_entries`]) and the shadow comparison, committed together. What a
/// group commit ([`crate::lead::group`]) does for many jobs at once, and what it falls back
/// to. `None`: the lead was erased after the job was made; nothing was written.
pub(super) async fn alone(
    pool: &sqlx::PgPool,
    sealer: &crate::pii::Sealer,
    meta: &JobMeta,
    lead: &LeadInput,
    consent: Option<&Consent>,
) -> Result<Option<Applied>, JobError> {
    let mut tx = db::begin(pool, Scope::Tenant(meta.tenant_id)).await?;
    let Some(applied) = store::apply(&mut tx, sealer, meta, lead).await? else {
        return Ok(None);
    };
    for (action, subject, details) in audit_entries(meta, &applied, consent) {
        meta.auditor()
            .entry(action, &subject)
            .details(details)
            .record(&mut *tx)
            .await?;
    }
    if let (true, Some(candidate)) = (applied.changed, &applied.candidate) {
        let subject = format!("lead:{}", applied.lead_id);
        shadow::record(
            &mut tx,
            meta,
            crate::kinds::LEAD_SCORE,
            &subject,
            Some(&applied.score),
            candidate,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(applied))
}

/// What a `lead_score` job records in the audit trail, as `(action, subject, details)`: the new
/// version (`lead.score`) when the change made one, and the consent the job carries
/// (`lead.consent`), if any.
pub(super) fn audit_entries(
    meta: &JobMeta,
    applied: &Applied,
    consent: Option<&Consent>,
) -> Vec<(&'static str, String, serde_json::Value)> {
    let subject = format!("lead:{}", applied.lead_id);
    let mut entries = Vec::new();
    if applied.changed {
        entries.push((
            "lead.score",
            subject.clone(),
            serde_json::json!({
                "job_id": meta.job_id, "attempt": meta.attempt,
                "version": applied.version,
                "score": applied.score.score, "tier": applied.score.tier,
            }),
        ));
    }
    if let Some(c) = consent {
        entries.push((
            "lead.consent",
            subject,
            serde_json::json!({
                "marketing": c.marketing, "given_at": c.given_at,
                "text_version": c.text_version, "job_id": meta.job_id,
            }),
        ));
    }
    entries
}
