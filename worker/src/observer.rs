//! Records every run in PostgreSQL (`job_runs`), audits dead letters, counts outcomes per
//! tenant, and alerts on dead letters (`leadq-notify`: kind, reason, tenant slug, job id and
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

/// Writes `job_runs` rows.
#[derive(Debug, Clone)]
pub struct RunRecorder {
    pool: PgPool,
    tenants: TenantLabels,
    alerts: Option<Notifier>,
}

impl RunRecorder {
    /// A recorder writing to `pool`, labelling per-tenant metrics with `tenants`, alerting
    /// on dead letters through the process-wide notifier (when alerts are on).
    pub fn new(pool: PgPool, tenants: TenantLabels) -> Self {
        Self {
            tenants,
            pool,
            alerts: leadq_notify::global().cloned(),
        }
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
        let pool = self.pool.clone();
        let meta = meta.clone();
        let tenants = self.tenants.clone();
        async move {
            // Runs inside the job's own Sentry hub: its events name the tenant by slug (the
            // bounded label: `other` past the cap).
            let label = tenants.label(meta.tenant_id).await;
            leadq_platform::telemetry::tag_tenant(meta.tenant_id, label.as_deref());
            let res = async {
                let mut tx = db::begin(&pool, Scope::Tenant(meta.tenant_id)).await?;
                sqlx::query(
                "insert into job_runs (job_id, tenant_id, kind, message_id, correlation_id, status,
                                       attempts, enqueued_at, first_started_at, last_started_at)
                 values ($1, $2, $3, $4, $5, 'running', $6, $7, now(), now())
                 on conflict (job_id) do update set status = 'running', attempts = excluded.attempts,
                     last_started_at = now(), updated_at = now()",
            )
            .bind(meta.job_id)
            .bind(meta.tenant_id)
            .bind(&meta.action)
            .bind(&meta.message_id)
            .bind(&meta.correlation_id)
            .bind(meta.attempt as i32)
            .bind(meta.timestamp)
            .execute(&mut *tx)
            .await?;
                tx.commit().await
            }
            .await;
            if let Err(error) = res {
                tracing::warn!(error = %error, "Could not record the start of a job run.");
            }
        }
        .boxed()
    }

    fn finished(&self, report: JobReport) -> BoxFuture<'static, ()> {
        let pool = self.pool.clone();
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
            let res = async {
                let mut tx = db::begin(&pool, Scope::Tenant(meta.tenant_id)).await?;
                sqlx::query(
                    "update job_runs set status = $2, attempts = $3, duration_ms = $4,
                        last_error_code = coalesce($5, last_error_code),
                        finished_at = case when $6 then now() else null end, updated_at = now()
                  where job_id = $1",
                )
                .bind(meta.job_id)
                .bind(status)
                .bind(meta.attempt as i32)
                .bind(report.duration.as_millis() as i64)
                .bind(report.error_code)
                .bind(finished)
                .execute(&mut *tx)
                .await?;
                if let Settled::Dead { reason } = &report.settled {
                    meta.auditor()
                        .entry("job.dead_letter", &format!("job:{}", meta.job_id))
                        .outcome(reason)
                        .details(serde_json::json!({
                            "kind": meta.action, "attempts": meta.attempt,
                            "error_code": report.error_code, "at": Utc::now(),
                        }))
                        .record(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }
            .await;
            if let Err(error) = res {
                tracing::warn!(error = %error, "Could not record the end of a job run.");
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
