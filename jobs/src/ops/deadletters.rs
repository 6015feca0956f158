//! Dead-letter operations as operators use them (API and CLI): every view and every action is
//! audited (platform scope, actor `operator:<name>`), payloads are scrubbed before they are
//! shown, and bulk actions report progress.
//!
//! The engine side (paging, atomic re-drive and purge) is [`leadq_queue::dlq`].

use chrono::{DateTime, Utc};
use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use leadq_queue::dlq::{Filter, Page, Progress};
use leadq_queue::{DeadLetter, Queue, QueueError};

/// Errors of an operator action (dead letters, tenant queue controls).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Bad input (unknown kind or tenant, an unbounded purge, a bad cursor).
    #[error("{0}")]
    Invalid(String),
    /// Redis failed.
    #[error("queue error")]
    Queue(#[from] QueueError),
    /// The database (audit) failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// A tenant given by slug, as operators name them.
pub async fn tenant_by_slug(pool: &PgPool, slug: &str) -> Result<Uuid, OpsError> {
    leadq_platform::tenant::id_by_slug(pool, slug)
        .await?
        .ok_or_else(|| OpsError::Invalid(format!("no tenant with slug {slug:?}")))
}

pub(crate) fn check_kind(kind: &str) -> Result<(), OpsError> {
    if crate::kinds::is_known(kind) {
        Ok(())
    } else {
        Err(OpsError::Invalid(format!(
            "unknown kind {kind:?} (known: {})",
            crate::kinds::names().join(", ")
        )))
    }
}

/// A dead letter fit to show: the payload scrubbed, the signature left out.
/// A dead letter as operators and tenants see it: payload scrubbed, signature dropped.
pub(crate) fn shown(mut d: DeadLetter) -> DeadLetter {
    if let Some(e) = d.envelope.as_mut() {
        leadq_platform::scrub::global().scrub_json(&mut e.payload);
        e.signature = None;
    }
    d
}

fn filter_json(f: &Filter) -> serde_json::Value {
    serde_json::json!({
        "tenant": f.tenant, "reason": f.reason,
        "dead_before": f.dead_before, "dead_after": f.dead_after,
    })
}

pub(crate) async fn record(
    pool: &PgPool,
    actor: &str,
    action: &str,
    subject: &str,
    correlation_id: &str,
    details: serde_json::Value,
) -> Result<(), OpsError> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    Auditor {
        tenant_id: None,
        actor,
        correlation_id,
    }
    .entry(action, subject)
    .details(details)
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Audits an operator's action that failed (platform scope, outcome `failed`); a failure to
/// audit it is logged, not returned: the action's own error is what the caller reports.
pub(crate) async fn record_failed(
    pool: &PgPool,
    who: Actor<'_>,
    action: &str,
    subject: &str,
    details: serde_json::Value,
) {
    let recorded = async {
        let mut tx = db::begin(pool, Scope::Platform).await?;
        Auditor {
            tenant_id: None,
            actor: who.actor,
            correlation_id: who.correlation_id,
        }
        .entry(action, subject)
        .outcome("failed")
        .details(details)
        .record(&mut *tx)
        .await?;
        tx.commit().await
    };
    if let Err(e) = recorded.await {
        tracing::error!(error = %e, action, "Could not audit an operator action that failed.");
    }
}

/// Who does it and under which correlation id.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// `operator:<name>`.
    pub actor: &'a str,
    /// The request's or the command's correlation id.
    pub correlation_id: &'a str,
}

/// One page of dead letters, scrubbed; audited as `dlq.list`.
pub async fn list(
    pool: &PgPool,
    queue: &Queue,
    who: Actor<'_>,
    kind: &str,
    filter: &Filter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page, OpsError> {
    check_kind(kind)?;
    record(
        pool,
        who.actor,
        "dlq.list",
        &format!("kind:{kind}"),
        who.correlation_id,
        filter_json(filter),
    )
    .await?;
    let page = queue.dead_letter_page(kind, filter, cursor, limit).await?;
    Ok(Page {
        items: page.items.into_iter().map(shown).collect(),
        next_cursor: page.next_cursor,
    })
}

/// One dead letter, scrubbed; audited as `dlq.show`.
pub async fn show(
    pool: &PgPool,
    queue: &Queue,
    who: Actor<'_>,
    kind: &str,
    job_id: Uuid,
) -> Result<Option<DeadLetter>, OpsError> {
    check_kind(kind)?;
    record(
        pool,
        who.actor,
        "dlq.show",
        &format!("job:{job_id}"),
        who.correlation_id,
        serde_json::json!({"kind": kind}),
    )
    .await?;
    Ok(queue.dead_letter(kind, job_id).await?.map(shown))
}

/// Re-drive or purge.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Put the jobs back on the queue (same job, same `message_id`).
    Redrive,
    /// Delete them for good.
    Purge,
}

/// How many of an action's ids its audit entry lists by name.
pub const IDS_AUDITED: usize = 1_000;

/// Which dead letters an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These ids, those of them the filter selects (an empty filter: all of them). The
    /// filter narrows, never widens: `--id X --tenant acme` touches X only if it is acme's.
    Ids {
        /// The dead letters named.
        ids: Vec<Uuid>,
        /// What they must also match.
        within: Filter,
    },
    /// Every dead letter matching the filter. An empty filter is refused for a purge unless
    /// `all` is set.
    Matching {
        /// The filter.
        filter: Filter,
        /// Confirms an unfiltered purge.
        all: bool,
    },
}

/// What an action did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The action.
    pub action: Action,
    /// The kind.
    pub kind: String,
    /// Dead letters selected.
    pub selected: usize,
    /// Re-driven or purged (fewer than selected if some changed meanwhile).
    pub done: usize,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

/// The dead letters `selection` names now (what a confirmation states before [`act`]), and
/// the selection as the audit records it. Refuses an unfiltered purge without `all`.
pub async fn selected(
    queue: &Queue,
    kind: &str,
    action: Action,
    selection: &Selection,
) -> Result<(Vec<Uuid>, serde_json::Value), OpsError> {
    check_kind(kind)?;
    Ok(match selection {
        Selection::Ids { ids, within } => {
            let mut kept = Vec::with_capacity(ids.len());
            if *within == Filter::default() {
                kept.clone_from(ids);
            } else {
                for id in ids {
                    if queue
                        .dead_letter(kind, *id)
                        .await?
                        .is_some_and(|d| within.matches(&d))
                    {
                        kept.push(*id);
                    }
                }
            }
            // The ids themselves, up to a bound, so that the trail can say which dead
            // letters a purge was asked for and which it took (those the filter selects).
            let named: Vec<&Uuid> = ids.iter().take(IDS_AUDITED).collect();
            let taken: Vec<&Uuid> = kept.iter().take(IDS_AUDITED).collect();
            let described = serde_json::json!({
                "ids": ids.len(), "job_ids": named, "within": filter_json(within),
                "selected_ids": taken,
            });
            (kept, described)
        }
        Selection::Matching { filter, all } => {
            if action == Action::Purge && *filter == Filter::default() && !all {
                return Err(OpsError::Invalid(
                    "a purge needs ids or a filter (tenant, reason, age), or all=true".into(),
                ));
            }
            (
                queue.dead_letter_ids(kind, filter).await?,
                filter_json(filter),
            )
        }
    })
}

/// Re-drives or purges the selected dead letters of `kind`, calling `progress(done, total)`
/// after every chunk; audited as `dlq.redrive` / `dlq.purge` with the selection and counts.
/// An action that stops on an error is audited too (outcome `failed`): each chunk it finished
/// was moved for good, so the entry names how many ids it went through (`processed`; the chunk
/// it stopped in may be partly moved as well). Unaudited, a re-drive of thousands that failed
/// halfway left its first thousands moved by no one the trail could name.
pub async fn act(
    pool: &PgPool,
    queue: &Queue,
    who: Actor<'_>,
    kind: &str,
    action: Action,
    selection: &Selection,
    progress: Progress<'_>,
) -> Result<Outcome, OpsError> {
    let (ids, described) = selected(queue, kind, action, selection).await?;
    let name = match action {
        Action::Redrive => "dlq.redrive",
        Action::Purge => "dlq.purge",
    };
    let mut processed = 0;
    let moved = {
        let mut tracked = |d: usize, t: usize| {
            processed = d;
            progress(d, t);
        };
        match action {
            Action::Redrive => queue.redrive(kind, &ids, &mut tracked).await,
            Action::Purge => queue.purge(kind, &ids, &mut tracked).await,
        }
    };
    let done = match moved {
        Ok(done) => done,
        Err(error) => {
            let details = serde_json::json!({
                "selection": described, "selected": ids.len(), "processed": processed,
                "error": "queue_unavailable",
            });
            record_failed(pool, who, name, &format!("kind:{kind}"), details).await;
            return Err(error.into());
        }
    };
    let outcome = Outcome {
        action,
        kind: kind.to_owned(),
        selected: ids.len(),
        done,
        finished_at: Utc::now(),
    };
    record(
        pool,
        who.actor,
        name,
        &format!("kind:{kind}"),
        who.correlation_id,
        serde_json::json!({"selection": described, "selected": ids.len(), "done": done}),
    )
    .await?;
    Ok(outcome)
}
