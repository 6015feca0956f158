//! `leadq billing baseline --reason …` and `leadq billing reconcile [--tenant SLUG]`: billing
//! reconciliation from a terminal (`leadq_jobs::ops::billing`). Both need `LEADQ_AUDIT_KEYS`:
//! baselines are signed with it.
//!
//! `reconcile` prints one JSON line per finding, then a summary line, and exits 1 when there
//! is any finding, so a cron job or a deploy check can act on the exit code alone.

use std::process::ExitCode;

use leadq_jobs::ops::billing;
use leadq_jobs::ops::deadletters::Actor;
use leadq_platform::config::Settings;
use leadq_platform::{db, telemetry};
use tokio::runtime::Runtime;

use super::audit::audit_keys;
use super::{exit_code, ops_exit_code};

#[derive(Debug, clap::Subcommand)]
pub(super) enum BillingCommand {
    /// Record every active tenant's limits and kind entitlements (or one tenant's) as the
    /// billing baseline, signed and audited; prints one JSON line per tenant.
    Baseline {
        /// Why (kept with the baseline and in the audit trail), e.g. "contract renewal 2026".
        #[arg(long)]
        reason: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Compare the live configuration with the baselines and the audited changes since, and
    /// a day's accepted jobs with what was recorded; prints one JSON line per finding and a
    /// summary; exit 1 on any finding.
    Reconcile {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// The UTC day whose usage is reconciled, e.g. 2026-12-04 (default: yesterday, the
        /// last complete day).
        #[arg(long)]
        day: Option<chrono::NaiveDate>,
    },
}

/// Runs a `leadq billing` command.
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    command: BillingCommand,
) -> ExitCode {
    telemetry::init_command_logs(settings);
    let actor = format!("operator:{operator}");
    let who = Actor {
        actor: &actor,
        correlation_id: "cli",
    };
    match command {
        BillingCommand::Baseline { reason, tenant } => ops_exit_code(runtime.block_on(async {
            let keys = audit_keys(settings)?;
            let pool = db::connect(settings.database_url(), 2).await?;
            for b in billing::baseline(&pool, keys, who, tenant.as_deref(), &reason).await? {
                println!("{}", serde_json::to_string(&b)?);
            }
            Ok(())
        })),
        BillingCommand::Reconcile { tenant, day } => {
            let day = day.unwrap_or_else(billing::yesterday);
            let report = runtime.block_on(async {
                let keys = audit_keys(settings)?;
                let ctx = super::dlq::OpsContext::connect(settings, operator).await?;
                Ok::<_, anyhow::Error>(
                    billing::reconcile(&ctx.pool, &ctx.queue, keys, who, tenant.as_deref(), day)
                        .await?,
                )
            });
            match report {
                Err(e) => ops_exit_code(Err(e)),
                Ok(report) => {
                    for f in &report.findings {
                        println!("{}", serde_json::json!(f));
                    }
                    println!(
                        "{}",
                        serde_json::json!({
                            "day": report.day, "checked": report.checked,
                            "findings": report.findings.len(),
                            "without_baseline": report.without_baseline,
                        })
                    );
                    if report.findings.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        exit_code(Err(anyhow::anyhow!(
                            "{} billing discrepancy(ies) found",
                            report.findings.len()
                        )))
                    }
                }
            }
        }
    }
}
