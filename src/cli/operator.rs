//! `leadq operator add|list|disable|enable`: the registry of platform operators (audited as
//! platform events, actor `operator:<LEADQ_OPERATOR>`).
//!
//! An operator token (`LEADQ_OPERATOR_TOKENS`) works only for a registered, enabled operator,
//! and an `operator:<name>` job runs only if its operator holds the kind's permission. Input
//! the registry refuses (a bad name or permission, a duplicate, an unknown operator) exits 2
//! with `invalid_request: …`.

use std::process::ExitCode;

use leadq_platform::audit::Auditor;
use leadq_platform::config::Settings;
use leadq_platform::operators::{self, OperatorError};
use leadq_platform::{db, telemetry};
use tokio::runtime::Runtime;

use super::exit_code;

#[derive(Debug, clap::Subcommand)]
pub(super) enum OperatorCommand {
    /// Register an operator; prints it as JSON.
    Add {
        /// The name, as in `LEADQ_OPERATOR_TOKENS` and `operator:<name>`.
        name: String,
        /// Comma-separated: dlq, limits, keys, tenants, console.
        #[arg(long, default_value = "")]
        permissions: String,
    },
    /// List the operators; one JSON line each.
    List,
    /// Disable an operator: its tokens and messages are refused from now on.
    Disable {
        /// Operator name.
        name: String,
    },
    /// Enable a disabled operator again.
    Enable {
        /// Operator name.
        name: String,
    },
}

/// Runs a `leadq operator` command as `by` (`operator:<by>` in the audit trail).
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    by: &str,
    command: OperatorCommand,
) -> ExitCode {
    telemetry::init_command_logs(settings);
    let result = match runtime.block_on(operator_command(settings, by, command)) {
        Err(e)
            if e.downcast_ref::<OperatorError>()
                .is_some_and(|k| !matches!(k, OperatorError::Db(_))) =>
        {
            eprintln!("invalid_request: {e}");
            return ExitCode::from(2);
        }
        other => other,
    };
    exit_code(result)
}

async fn operator_command(
    settings: &Settings,
    by: &str,
    cmd: OperatorCommand,
) -> anyhow::Result<()> {
    let pool = db::connect(settings.database_url(), 2).await?;
    let actor = format!("operator:{by}");
    let auditor = Auditor {
        tenant_id: None,
        actor: &actor,
        correlation_id: "cli",
    };
    let op = match cmd {
        OperatorCommand::Add { name, permissions } => {
            let permissions = operators::parse_permissions(&permissions)?;
            operators::add(&pool, &name, &permissions, &auditor).await?
        }
        OperatorCommand::List => {
            for op in operators::list(&pool).await? {
                println!("{}", serde_json::to_string(&op)?);
            }
            return Ok(());
        }
        OperatorCommand::Disable { name } => {
            operators::set_disabled(&pool, &name, true, &auditor).await?
        }
        OperatorCommand::Enable { name } => {
            operators::set_disabled(&pool, &name, false, &auditor).await?
        }
    };
    println!("{}", serde_json::to_string(&op)?);
    Ok(())
}
