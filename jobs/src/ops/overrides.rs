//! Which tenants run with special settings: one `leadq_tenant_override_info{tenant, setting}`
//! gauge at 1 per setting that differs from the platform default (billing limits, a kind in
//! shadow or disabled, a paused kind, a concurrency cap, a share other than 1, own scoring
//! rules), under the same bounded `tenant` label as every per-tenant metric. A dashboard then
//! shows at a glance why one tenant behaves unlike the others.
//!
//! The API refreshes them every 30 s. A setting that went back to its default drops to 0 (the
//! gauge stays, at 0, until the process restarts), so a panel on `== 1` is always current.

use std::collections::BTreeSet;
use std::sync::Mutex;

use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use leadq_queue::Queue;
use sqlx::PgPool;
use uuid::Uuid;

use crate::kinds;
use crate::ops::limits::{self, Limits};
use crate::tenant_labels::{TenantLabels, OTHER_TENANTS};

/// The settings of one tenant that differ from the defaults.
pub async fn of_tenant(
    pool: &PgPool,
    queue: &Queue,
    tenant: Uuid,
) -> Result<Vec<String>, anyhow::Error> {
    let mut out = Vec::new();
    if limits::get(pool, tenant).await? != Limits::default() {
        out.push("limits".to_owned());
    }
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let modes: Vec<(String, String)> = sqlx::query_as(
        "select kind, mode from tenant_job_kinds where tenant_id = $1 and mode <> 'enabled'
          order by kind",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    out.extend(
        modes
            .into_iter()
            .map(|(k, mode)| format!("kind_mode:{k}={mode}")),
    );
    let scoring: bool =
        sqlx::query_scalar("select exists (select 1 from scoring_rules where tenant_id = $1)")
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
    if scoring {
        out.push("scoring".to_owned());
    }
    tx.commit().await?;
    for kind in kinds::names() {
        let s = queue.tenant_state(kind, tenant).await?;
        if s.paused {
            out.push(format!("paused:{kind}"));
        }
        if s.cap.is_some() {
            out.push(format!("cap:{kind}"));
        }
        if (s.weight - 1.0).abs() > f64::EPSILON {
            out.push(format!("weight:{kind}"));
        }
    }
    Ok(out)
}

/// Publishes the override gauges of every labelled tenant (tenants folded into `other`, and
/// the canary, have none); settings no longer in force drop to 0.
#[derive(Debug, Default)]
pub struct Publisher {
    shown: Mutex<BTreeSet<(String, String)>>,
}

impl Publisher {
    /// One refresh.
    pub async fn refresh(
        &self,
        pool: &PgPool,
        queue: &Queue,
        labels: &TenantLabels,
    ) -> Result<(), anyhow::Error> {
        let tenants: Vec<Uuid> =
            sqlx::query_scalar("select id from tenants order by created_at, id")
                .fetch_all(pool)
                .await?;
        let mut now = BTreeSet::new();
        for tenant in tenants {
            let Some(label) = labels.label(tenant).await else {
                continue;
            };
            if label == OTHER_TENANTS {
                continue;
            }
            for setting in of_tenant(pool, queue, tenant).await? {
                now.insert((label.clone(), setting));
            }
        }
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        for (tenant, setting) in shown.difference(&now) {
            metrics::gauge!(m::TENANT_OVERRIDE_INFO, m::label::TENANT => tenant.clone(),
                m::label::SETTING => setting.clone())
            .set(0.0);
        }
        for (tenant, setting) in &now {
            metrics::gauge!(m::TENANT_OVERRIDE_INFO, m::label::TENANT => tenant.clone(),
                m::label::SETTING => setting.clone())
            .set(1.0);
        }
        *shown = now;
        Ok(())
    }
}
