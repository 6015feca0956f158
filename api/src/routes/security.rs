//! `GET /v1/health/security`: the security health checks (`leadq_jobs::ops::security`), for
//! operators. The API also runs them every [`REFRESH`] in the background to keep the
//! `leadq_security_check_ok` gauges current for the alerts (and the tenant override gauges,
//! `leadq_jobs::ops::overrides`).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use leadq_jobs::ops::security::{self, Check, Inputs, Status};
use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::OperatorContext;
use crate::AppState;

/// How often the background refresh runs the checks.
pub const REFRESH: Duration = Duration::from_secs(30);

/// The answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecurityHealth {
    /// `pass` when no check fails, else `fail`.
    pub status: Status,
    /// When the checks ran.
    pub generated_at: DateTime<Utc>,
    /// Every check, in a stable order.
    pub checks: Vec<Check>,
}

async fn run(app: &AppState) -> Vec<Check> {
    let checks = security::run(Inputs {
        pool: &app.pool,
        sealer: &app.sealer,
        settings: &app.settings,
        http: &app.http,
    })
    .await;
    security::publish(&checks);
    checks
}

/// `GET /v1/health/security` (operator token); each view is audited.
#[utoipa::path(get, path = "/v1/health/security", operation_id = "get_security_health", tag = "operations",
    security(("operator_token" = [])),
    responses((status = 200, description = "Every security check (permission `console`).",
               body = SecurityHealth)))]
pub async fn get(
    State(app): State<AppState>,
    operator: OperatorContext,
) -> Result<Json<SecurityHealth>, ApiError> {
    operator.require(leadq_platform::operators::permission::CONSOLE)?;
    let checks = run(&app).await;
    let mut tx = db::begin(&app.pool, Scope::Platform).await?;
    Auditor {
        tenant_id: None,
        actor: &operator.actor,
        correlation_id: &operator.correlation_id,
    }
    .entry("security_health.view", "platform:security")
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    let failing = checks.iter().any(|c| c.status == Status::Fail);
    Ok(Json(SecurityHealth {
        status: if failing { Status::Fail } else { Status::Pass },
        generated_at: Utc::now(),
        checks,
    }))
}

/// Runs the checks, and refreshes the tenant override gauges, every [`REFRESH`] until the
/// process ends.
pub async fn refresh_forever(app: AppState) {
    let overrides = leadq_jobs::ops::overrides::Publisher::default();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        run(&app).await;
        if let Err(error) = overrides
            .refresh(&app.pool, &app.queue, &app.tenant_labels)
            .await
        {
            tracing::warn!(error = %error, "Could not refresh the tenant override gauges.");
        }
    }
}
