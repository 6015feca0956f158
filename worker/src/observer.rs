//! Records every run in PostgreSQL (`job_runs`, through the group-committing writer of
//! [`crate::runlog`]), audits dead letters, counts outcomes per tenant, and alerts on dead
//! letters (`leadq-notify`: kind, reason, tenant slug, job id and
//! correlation id, never the payload).
//!
//! Best effort by design: the queue in Redis is the source of truth for what runs next. If
//! PostgreSQL is down the handler itself fails and retries, and these rows catch up on the
//! next run.

use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use leadq_jobs::tenant_labels::TenantLabels;
use leadq_notify::{Alert, DeadLetter, Notifier};
use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use leadq_queue::backend::{JobObserver, JobReport, Rejection};
use leadq_queue::envelope::JobMeta;
use leadq_queue::Settled;
use sqlx::PgPool;

use crate::runlog::{RunLog, RunRow};

/// Writes `job_runs` rows.
#[derive(Debug, Clone)]
pub struct RunRecorder {
    pool: PgPool,
    runs: RunLog,
    tenants: TenantLabels,
    alerts: Option<Notifier>,
}

impl RunRecorder {
    /// A recorder writing to `pool`, labelling per-tenant metrics with `tenants`, alerting
    /// on dead letters through the process-wide notifier (when alerts are on). Starts the
    /// `job_runs` writer ([`crate::runlog`]) on the current runtime.
    pub fn new(pool: PgPool, tenants: TenantLabels) -> Self {
        Self {
            tenants,
            runs: RunLog::start(pool.clone()),
            pool,
            alerts: leadq_notify::global().cloned(),
        }
    }

    /// The `job_runs` writer, to flush it when the worker stops.
    pub fn runs(&self) -> RunLog {
        self.runs.clone()
    }

    /// Alerts on dead letters through `alerts` instead.
    pub fn with_alerts(mut self, alerts: Notifier) -> Self {
        self.alerts = Some(alerts);
        self
    }
}

/// The tenant's slug for an alert (its id if the slug cannot be read).
async fn tenant_slug(pool: &PgPool, tenant: uuid::Uuid) -> String {
    sqlx::query_scalar::<_, String>("select slug from tenants where id = $1")
        .bind(tenant)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| tenant.to_string())
}

impl JobObserver for RunRecorder {
    fn started(&self, meta: &JobMeta) -> BoxFuture<'static, ()> {
        let runs = self.runs.clone();
        let meta = meta.clone();
        let tenants = self.tenants.clone();
        async move {
            // Runs inside the job's own Sentry hub: its events name the tenant by slug (the
            // bounded label: `other` past the cap).
            let label = tenants.label(meta.tenant_id).await;
            leadq_platform::telemetry::tag_tenant(meta.tenant_id, label.as_deref());
            runs.write(RunRow::start(&meta)).await;
        }
        .boxed()
    }

    fn finished(&self, report: JobReport) -> BoxFuture<'static, ()> {
        let pool = self.pool.clone();
        let runs = self.runs.clone();
        let tenants = self.tenants.clone();
        let alerts = self.alerts.clone();
        async move {
            if let (Settled::Dead { reason }, Some(alerts)) = (&report.settled, &alerts) {
                let meta = &report.meta;
                let tenant = tenant_slug(&pool, meta.tenant_id).await;
                alerts.report(Alert::dead_letter(&DeadLetter {
                    kind: &meta.action,
                    reason,
                    tenant: &tenant,
                    job_id: &meta.job_id.to_string(),
                    correlation_id: &meta.correlation_id,
                }));
            }
            let outcome = match &report.settled {
                Settled::Completed => Some(m::outcome::COMPLETED),
                Settled::Retried { .. } => Some(m::outcome::RETRIED),
                Settled::Snoozed { .. } => Some(m::outcome::RATE_LIMITED),
                Settled::Dead { .. } => Some(m::outcome::DEAD),
                Settled::Released | Settled::Lost => None,
            };
            if let (Some(outcome), Some(tenant)) =
                (outcome, tenants.label(report.meta.tenant_id).await)
            {
                metrics::counter!(m::TENANT_JOBS_TOTAL,
                    m::label::TENANT => tenant,
                    m::label::KIND => report.meta.action.clone(),
                    m::label::OUTCOME => outcome)
                .increment(1);
            }
            let status = match &report.settled {
                Settled::Completed => "completed",
                Settled::Retried { .. } | Settled::Snoozed { .. } | Settled::Released => "retrying",
                Settled::Dead { .. } => "dead",
                Settled::Lost => return,
            };
            let finished = matches!(report.settled, Settled::Completed | Settled::Dead { .. });
            let meta = &report.meta;
            let row = RunRow::outcome(meta, status, report.duration, report.error_code, finished);
            runs.write(row).await;
            // A dead letter is rare: its audit row has a transaction of its own.
            if let Settled::Dead { reason } = &report.settled {
                let res = async {
                    let mut tx = db::begin(&pool, Scope::Tenant(meta.tenant_id)).await?;
                    meta.auditor()
                        .entry("job.dead_letter", &format!("job:{}", meta.job_id))
                        .outcome(reason)
                        .details(serde_json::json!({
                            "kind": meta.action, "attempts": meta.attempt,
                            "error_code": report.error_code, "at": Utc::now(),
                        }))
                        .record(&mut *tx)
                        .await?;
                    tx.commit().await
                }
                .await;
                if let Err(error) = res {
                    tracing::warn!(error = %error, "Could not audit a dead letter.");
                }
            }
        }
        .boxed()
    }

    fn rejected(&self, r: Rejection) -> BoxFuture<'static, ()> {
        let pool = self.pool.clone();
        if let Some(alerts) = &self.alerts {
            // The envelope's tenant is unverified: named as a claim, never as the tenant.
            let claimed = r
                .claimed_tenant
                .map_or_else(|| "unknown".to_owned(), |t| format!("unverified claim {t}"));
            alerts.report(Alert::dead_letter(&DeadLetter {
                kind: r.kind,
                reason: r.reason,
                tenant: &claimed,
                job_id: &r.job_id,
                correlation_id: "-",
            }));
        }
        async move {
            // A platform-level security event: the claimed tenant is unverified, so it is
            // recorded as a detail, not as the row's tenant.
            let res = async {
                let mut tx = db::begin(&pool, Scope::Platform).await?;
                Auditor {
                    tenant_id: None,
                    actor: "worker",
                    correlation_id: &r.job_id,
                }
                .entry("security.job_rejected", &format!("job:{}", r.job_id))
                .outcome(r.reason)
                .details(serde_json::json!({
                    "kind": r.kind, "claimed_tenant_id": r.claimed_tenant,
                }))
                .record(&mut *tx)
                .await?;
                tx.commit().await
            }
            .await;
            if let Err(error) = res {
                tracing::warn!(error = %error, "Could not audit a rejected job.");
            }
        }
        .boxed()
    }
}
