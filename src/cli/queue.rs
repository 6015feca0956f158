//! `leadq queue tenant`: per-tenant queue controls from the command line (audited).

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use leadq_jobs::ops::tenant_queue::{self, Control};
use leadq_platform::config::Settings;
use leadq_platform::telemetry;
use tokio::runtime::Runtime;

use super::dlq::OpsContext;
use super::ops_exit_code;

/// `leadq queue …`
#[derive(Debug, Subcommand)]
pub(super) enum QueueCommand {
    /// Show or change one tenant's controls for one kind; prints {tenant, kind, resumed,
    /// state{paused, cap, running, held, weight}}.
    Tenant {
        /// Tenant slug.
        slug: String,
        /// Job kind, e.g. crm_sync.
        kind: String,
        /// show; pause (hold its jobs; running ones finish); resume; cap N (at most N of its
        /// jobs at once across all workers); uncap; weight W (its share of the workers
        /// relative to other tenants with work waiting, default 1).
        action: TenantAction,
        /// N for cap, W for weight.
        value: Option<String>,
    },
}

/// See [`QueueCommand::Tenant`].
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum TenantAction {
    /// Print the state.
    Show,
    /// Hold the tenant's jobs.
    Pause,
    /// Release them.
    Resume,
    /// Cap concurrent jobs.
    Cap,
    /// Remove the cap.
    Uncap,
    /// Set the share.
    Weight,
}

/// The control a command line asks for, or why it is not one.
fn control(action: TenantAction, value: Option<&str>) -> Result<Control, String> {
    let need = |what: &str| value.ok_or_else(|| format!("{what} needs a value"));
    Ok(match action {
        TenantAction::Show => Control::Show,
        TenantAction::Pause => Control::Pause,
        TenantAction::Resume => Control::Resume,
        TenantAction::Uncap => Control::Cap(None),
        TenantAction::Cap => {
            Control::Cap(Some(need("cap")?.parse().map_err(|_| {
                "cap must be a whole number of at least 1".to_owned()
            })?))
        }
        TenantAction::Weight => Control::Weight(
            need("weight")?
                .parse()
                .map_err(|_| "weight must be a number".to_owned())?,
        ),
    })
}

/// Runs a `leadq queue` command.
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    command: QueueCommand,
) -> ExitCode {
    telemetry::init_logs(&settings.log_filter, settings.log_format);
    ops_exit_code(runtime.block_on(queue(settings, operator, command)))
}

async fn queue(settings: &Settings, operator: &str, cmd: QueueCommand) -> anyhow::Result<()> {
    let QueueCommand::Tenant {
        slug,
        kind,
        action,
        value,
    } = cmd;
    let control = control(action, value.as_deref())
        .map_err(leadq_jobs::ops::deadletters::OpsError::Invalid)?;
    let ctx = OpsContext::connect(settings, operator).await?;
    let applied =
        tenant_queue::apply(&ctx.pool, &ctx.queue, ctx.who(), &slug, &kind, control).await?;
    println!("{}", serde_json::to_string(&applied)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_parsed_or_refused_with_a_reason() {
        assert_eq!(
            control(TenantAction::Cap, Some("3")),
            Ok(Control::Cap(Some(3)))
        );
        assert_eq!(control(TenantAction::Uncap, None), Ok(Control::Cap(None)));
        assert_eq!(
            control(TenantAction::Weight, Some("2.5")),
            Ok(Control::Weight(2.5))
        );
        assert!(control(TenantAction::Cap, None).is_err());
        assert!(control(TenantAction::Cap, Some("-1")).is_err());
        assert!(control(TenantAction::Weight, Some("x")).is_err());
    }
}
