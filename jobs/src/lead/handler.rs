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
use crate::lead::{shadow, store, sync, Attached, Consent, LeadInput, LeadPayload};
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
    let applied = deps
        .group
        .apply(meta.clone(), lead, Attached::Score(consent))
        .await?;
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

/// The change of one job in a transaction of its own: the lead store's [`store::apply`] (or,
/// with a message, [`store::ensure`], [`store::add_message`] and [`store::apply_to`]), the
/// job's audit rows ([`Attached::audit_entries`]) and the shadow comparison, committed
/// together. What a group commit ([`crate::lead::group`]) does for many jobs at once, and what
/// it falls back to. `None`: the lead was erased after the job was made; nothing was written.
pub(super) async fn alone(
    pool: &sqlx::PgPool,
    sealer: &crate::pii::Sealer,
    meta: &JobMeta,
    lead: &LeadInput,
    attached: &Attached,
) -> Result<Option<Applied>, JobError> {
    let mut tx = db::begin(pool, Scope::Tenant(meta.tenant_id)).await?;
    let applied = match attached.message() {
        None => store::apply(&mut tx, sealer, meta, lead).await?,
        Some(m) => match store::ensure(&mut tx, meta, &lead.external_id, &lead.source).await? {
            None => None,
            Some(mut held) => {
                store::add_message(&mut tx, sealer, meta.tenant_id, &mut held, &m.message())
                    .await?;
                Some(store::apply_to(&mut tx, sealer, meta, lead, held).await?)
            }
        },
    };
    let Some(applied) = applied else {
        return Ok(None);
    };
    let entries = attached.audit_entries(meta, &applied);
    record_applied(&mut tx, meta, attached.kind(), entries, &applied).await?;
    tx.commit().await?;
    Ok(Some(applied))
}

/// What follows a change the lead store made for one job, in the job's transaction: the job's
/// audit entries, as `(action, subject, details)`, and the shadow comparison
/// ([`shadow::record_applied`], filed under `kind`). For the paths that write one job's change
/// on their own ([`alone`], a Chatwoot conversation state or agent's reply); a group commit
/// writes its audit rows in its one statement.
pub async fn record_applied(
    conn: &mut sqlx::PgConnection,
    meta: &JobMeta,
    kind: &'static str,
    entries: Vec<(&'static str, String, serde_json::Value)>,
    applied: &Applied,
) -> Result<(), sqlx::Error> {
    for (action, subject, details) in entries {
        meta.auditor()
            .entry(action, &subject)
            .details(details)
            .record(&mut *conn)
            .await?;
    }
    shadow::record_applied(conn, meta, kind, applied).await
}
