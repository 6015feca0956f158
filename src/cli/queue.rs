//! `leadq queue tenant|tenants|find`: per-tenant queue controls, every tenant's standing, and
//! finding one job, from the command line (audited). The same operations as the console and
//! the JSON API (`leadq_jobs::ops::{tenant_queue, lookup}`).

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use leadq_jobs::ops::deadletters::OpsError;
use leadq_jobs::ops::lookup;
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
    /// Every tenant's standing per kind (a page of 100 tenants by slug); prints one JSON line
    /// per tenant and kind {tenant, kind, backlog, held, running, cap, weight, paused}.
    Tenants {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Tenants after this slug (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Where one job is now and its runs; prints {job_id, kind, tenant, message_id,
    /// location{state, …}, attempts, last_error_code, runs}. Exit status 2 if nothing knows it.
    Find {
        /// A job id, or a producer's message id (then --tenant is required).
        id: String,
        /// The job's tenant (slug).
        #[arg(long)]
        tenant: Option<String>,
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
    telemetry::init_command_logs(settings);
    ops_exit_code(runtime.block_on(queue(settings, operator, command)))
}

async fn queue(settings: &Settings, operator: &str, cmd: QueueCommand) -> anyhow::Result<()> {
    let ctx = OpsContext::connect(settings, operator).await?;
    match cmd {
        QueueCommand::Tenant {
            slug,
            kind,
            action,
            value,
        } => {
            let control = control(action, value.as_deref()).map_err(OpsError::Invalid)?;
            let applied =
                tenant_queue::apply(&ctx.pool, &ctx.queue, ctx.who(), &slug, &kind, control)
                    .await?;
            println!("{}", serde_json::to_string(&applied)?);
        }
        QueueCommand::Tenants { tenant, after } => {
            let rows = tenant_queue::overview(
                &ctx.pool,
                &ctx.queue,
                ctx.who(),
                tenant.as_deref(),
                after.as_deref(),
            )
            .await?;
            for row in rows {
                println!("{}", serde_json::to_string(&row)?);
            }
        }
        QueueCommand::Find { id, tenant } => {
            let query = match (uuid::Uuid::parse_str(&id), tenant) {
                (Ok(id), tenant) => lookup::Query::Job { id, tenant },
                (Err(_), Some(tenant)) => lookup::Query::Message {
                    message_id: id,
                    tenant,
                },
                (Err(_), None) => {
                    return Err(OpsError::Invalid(
                        "a message id is unique within its tenant only: add --tenant".into(),
                    )
                    .into())
                }
            };
            match lookup::find(&ctx.pool, &ctx.queue, ctx.who(), &query).await? {
                Some(report) => println!("{}", serde_json::to_string(&report)?),
                None => return Err(OpsError::Invalid("no such job".into()).into()),
            }
        }
    }
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
