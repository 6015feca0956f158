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
use leadq_queue::error::JobError;

use crate::lead::{shadow, store, sync, Consent, LeadPayload};
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
    let mut tx = db::begin(pool, Scope::Tenant(meta.tenant_id)).await?;
    if meta.shadow {
        // Shadow mode: record what would have happened, change nothing else.
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
    let Some(applied) = store::apply(&mut tx, &deps.sealer, meta, &lead).await? else {
        tracing::info!("Skipping a job for a lead erased after the job was made.");
        return Ok(());
    };
    if applied.changed {
        meta.auditor()
            .entry("lead.score", &format!("lead:{}", applied.lead_id))
            .details(serde_json::json!({
                "job_id": meta.job_id, "attempt": meta.attempt,
                "version": applied.version,
                "score": applied.score.score, "tier": applied.score.tier,
            }))
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
    if let Some(c) = &consent {
        meta.auditor()
            .entry("lead.consent", &format!("lead:{}", applied.lead_id))
            .details(serde_json::json!({
                "marketing": c.marketing, "given_at": c.given_at,
                "text_version": c.text_version, "job_id": meta.job_id,
            }))
            .record(&mut *tx)
            .await?;
    }
    tx.commit().await?;
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
