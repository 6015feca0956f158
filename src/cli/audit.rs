//! `leadq audit verify`: recomputes the audit trail's hash chains.
//!
//! One JSON line per chain on stdout; exit 1 when any chain is broken, so a cron job or a
//! deploy check can act on the exit code alone.

use std::process::ExitCode;

use leadq_platform::config::Settings;
use leadq_platform::{db, telemetry};
use tokio::runtime::Runtime;

use super::exit_code;

#[derive(Debug, clap::Subcommand)]
pub(super) enum AuditCommand {
    /// Recompute the hash chains; print one JSON line per chain; exit 1 if any is broken.
    Verify {
        /// Only this tenant's chain (default: every tenant and the platform chain).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Runs a `leadq audit` command.
pub(super) fn run(runtime: &Runtime, settings: &Settings, command: AuditCommand) -> ExitCode {
    telemetry::init_logs(&settings.log_filter, settings.log_format);
    let AuditCommand::Verify { tenant } = command;
    match runtime.block_on(audit_verify(settings, tenant.as_deref())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => exit_code(Err(e)),
    }
}

/// Verifies the audit chains; prints one JSON line per chain. `Ok(false)`: a chain is broken.
async fn audit_verify(settings: &Settings, slug: Option<&str>) -> anyhow::Result<bool> {
    use leadq_platform::audit::{verify_all, verify_chain};
    use leadq_platform::db::Scope;
    let pool = db::connect(settings.database_url(), 2).await?;
    let reports = match slug {
        None => verify_all(&pool).await?,
        Some(s) => {
            let id: Option<uuid::Uuid> =
                sqlx::query_scalar("select id from tenants where slug = $1")
                    .bind(s)
                    .fetch_optional(&pool)
                    .await?;
            let id = id.ok_or_else(|| anyhow::anyhow!("no tenant with slug {s:?}"))?;
            vec![verify_chain(&pool, Scope::Tenant(id)).await?]
        }
    };
    for report in &reports {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(reports.iter().all(|r| r.first_broken_id.is_none()))
}
