//! Per-tenant queue controls as operators use them: pause and resume one tenant's jobs of a
//! kind, cap how many run at once across all workers, set its share of the workers. Every
//! change is audited (platform scope, actor `operator:<name>`): its entry commits once Redis
//! has applied it, and a change Redis refused is audited as `failed`.
//!
//! The engine side (held slots, running counts, fair shares) is `queue/lua/fair.lua`.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ops::deadletters::{check_kind, record, record_failed, tenant_by_slug, Actor, OpsError};
use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use leadq_queue::{Queue, TenantState};

/// One change to a tenant's queue controls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Control {
    /// Only read the current state (audited as a view).
    Show,
    /// Hold every job of the tenant until resumed (running ones finish).
    Pause,
    /// Let held jobs run again.
    Resume,
    /// At most this many of its jobs at once across all workers; `None` removes the cap.
    Cap(Option<u32>),
    /// Its share of the workers relative to other tenants with work waiting (default 1).
    Weight(f64),
}

impl Control {
    /// Whether `state` is what this change makes it (the change was applied, or had nothing
    /// to change).
    fn holds_in(self, state: &TenantState) -> bool {
        match self {
            Control::Show => true,
            Control::Pause => state.paused,
            Control::Resume => !state.paused,
            Control::Cap(cap) => state.cap == cap,
            Control::Weight(w) => (state.weight - w).abs() <= f64::EPSILON * w.abs().max(1.0),
        }
    }

    fn action(self) -> &'static str {
        match self {
            Control::Show => "queue.tenant.show",
            Control::Pause => "queue.tenant.pause",
            Control::Resume => "queue.tenant.resume",
            Control::Cap(_) => "queue.tenant.cap",
            Control::Weight(_) => "queue.tenant.weight",
        }
    }
}

/// The tenant's state after a control was applied.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// Tenant slug.
    pub tenant: String,
    /// Kind.
    pub kind: String,
    /// Held jobs let back into the queue by this change.
    pub resumed: u64,
    /// The tenant's controls and held jobs now.
    pub state: TenantState,
}

/// Applies `control` to tenant `slug`'s jobs of `kind`.
pub async fn apply(
    pool: &PgPool,
    queue: &Queue,
    who: Actor<'_>,
    slug: &str,
    kind: &str,
    control: Control,
) -> Result<Applied, OpsError> {
    check_kind(kind)?;
    match control {
        Control::Cap(Some(0)) => return Err(OpsError::Invalid("a cap must be at least 1".into())),
        Control::Weight(w) if !(w.is_finite() && (0.01..=1000.0).contains(&w)) => {
            return Err(OpsError::Invalid("a weight must be 0.01-1000".into()))
        }
        _ => {}
    }
    let tenant = tenant_by_slug(pool, slug).await?;
    let details = match control {
        Control::Cap(cap) => serde_json::json!({"tenant_id": tenant, "cap": cap}),
        Control::Weight(w) => serde_json::json!({"tenant_id": tenant, "weight": w}),
        _ => serde_json::json!({"tenant_id": tenant}),
    };
    let subject = format!("tenant:{tenant}/kind:{kind}");
    // The entry is written in a transaction that commits only once Redis has applied the
    // change: no change without its entry, and no entry (`ok`) for a change Redis refused —
    // that one is audited as `failed`. (Only a commit failing after Redis applied it leaves
    // the change unaudited; it is logged.)
    let auditor = Auditor {
        tenant_id: None,
        actor: who.actor,
        correlation_id: who.correlation_id,
    };
    let mut tx = db::begin(pool, Scope::Platform).await?;
    auditor
        .entry(control.action(), &subject)
        .details(details.clone())
        .record(&mut *tx)
        .await?;
    let applied = match control {
        Control::Show => Ok(0),
        Control::Pause => queue.pause_tenant(kind, tenant).await.map(|r| r.resumed),
        Control::Resume => queue.resume_tenant(kind, tenant).await.map(|r| r.resumed),
        Control::Cap(cap) => queue
            .set_tenant_cap(kind, tenant, cap)
            .await
            .map(|r| r.resumed),
        Control::Weight(w) => queue.set_tenant_weight(kind, tenant, w).await.map(|_| 0),
    };
    // An error may still have applied the change (the answer was lost after the script
    // ran): what Redis holds now says which, when it can be read.
    let applied = match applied {
        Ok(resumed) => Ok(resumed),
        Err(error) => match queue.tenant_state(kind, tenant).await {
            Ok(now) if control.holds_in(&now) => Ok(0),
            _ => Err(error),
        },
    };
    let resumed = match applied {
        Ok(resumed) => {
            if let Err(error) = tx.commit().await {
                tracing::error!(error = %error, action = control.action(),
                    "A queue control was applied but its audit entry could not be committed.");
                return Err(error.into());
            }
            resumed
        }
        Err(error) => {
            drop(tx);
            let mut details = details;
            details["error"] = serde_json::json!("queue_unavailable");
            record_failed(pool, who, control.action(), &subject, details).await;
            return Err(error.into());
        }
    };
    Ok(Applied {
        tenant: slug.to_owned(),
        kind: kind.to_owned(),
        resumed,
        state: queue.tenant_state(kind, tenant).await?,
    })
}

/// One tenant's standing in one kind's queue, as the console's tenants page and
/// `GET /v1/queues/tenants` show it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct TenantQueue {
    /// Tenant slug.
    pub tenant: String,
    /// Kind.
    pub kind: String,
    /// Its jobs ready to run or held back (not running, not scheduled).
    pub backlog: u64,
    /// Of those, held back: paused, or waiting for room under its cap.
    pub held: u64,
    /// Its jobs running now (counted only while a cap is set).
    pub running: u64,
    /// At most this many of its jobs at once across all workers (absent: no cap).
    pub cap: Option<u32>,
    /// Its share of the workers relative to other tenants (default 1).
    pub weight: f64,
    /// Paused: none of its jobs start.
    pub paused: bool,
}

/// The most tenants one overview shows: the console pages them by slug.
pub const OVERVIEW_PAGE: i64 = 100;

/// Every kind's controls and backlog for up to [`OVERVIEW_PAGE`] tenants in slug order, after
/// `after` (a slug; a previous page's last) or only the tenant `only`; audited as
/// `queue.tenants.view`. One Redis round trip per kind and shard, however many tenants.
pub async fn overview(
    pool: &PgPool,
    queue: &Queue,
    who: Actor<'_>,
    only: Option<&str>,
    after: Option<&str>,
) -> Result<Vec<TenantQueue>, OpsError> {
    let tenants: Vec<(Uuid, String)> = sqlx::query_as(
        "select id, slug from tenants
          where ($1::text is null or slug = $1) and ($2::text is null or slug > $2)
          order by slug limit $3",
    )
    .bind(only)
    .bind(after)
    .bind(OVERVIEW_PAGE)
    .fetch_all(pool)
    .await?;
    if only.is_some() && tenants.is_empty() {
        return Err(OpsError::Invalid(format!(
            "no tenant with slug {:?}",
            only.unwrap_or("")
        )));
    }
    record(
        pool,
        who.actor,
        "queue.tenants.view",
        only.map_or_else(|| "platform:tenants".to_owned(), |s| format!("tenant:{s}"))
            .as_str(),
        who.correlation_id,
        serde_json::json!({"tenants": tenants.len(), "after": after}),
    )
    .await?;
    let ids: Vec<Uuid> = tenants.iter().map(|(id, _)| *id).collect();
    let mut rows = Vec::with_capacity(ids.len() * crate::kinds::names().len());
    for kind in crate::kinds::names() {
        let states = queue.tenant_states(kind, &ids).await?;
        for ((_, slug), s) in tenants.iter().zip(states) {
            rows.push(TenantQueue {
                tenant: slug.clone(),
                kind: kind.to_owned(),
                backlog: s.backlog,
                held: s.held,
                running: s.running,
                cap: s.cap,
                weight: s.weight,
                paused: s.paused,
            });
        }
    }
    rows.sort_by(|a, b| (&a.tenant, &a.kind).cmp(&(&b.tenant, &b.kind)));
    Ok(rows)
}
