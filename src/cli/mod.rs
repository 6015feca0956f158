//! Command-line interface. Results go to stdout, logs to stderr.
//!
//! Exit codes: 0 ok; 1 runtime failure; 2 invalid configuration or usage;
//! 3 `tenant create` of a slug that exists (stderr starts with `tenant_exists`).
//!
//! # Layout
//! One file per command group, as mini-redis has one per command: each holds its clap
//! subcommands and its body, and ends in the process's [`ExitCode`]. This file holds the
//! [`Cli`] tree, the settings each command needs, the runtime, the dispatch, and the mapping
//! of results to exit codes that every command shares.
//! - `serve`: `api`, `worker`.
//! - `migrate`: `migrate`.
//! - `tenant`: `tenant create|set-kind|update|set-limits`.
//! - `key`: `key create|list|revoke|rotate`.
//! - `operator`: `operator add|list|disable|enable` (the operator registry).
//! - `lead`: `lead erase`.
//! - `audit`: `audit verify`.
//! - `dlq`: `dlq list|show|redrive|purge`.
//! - `queue`: `queue tenant <slug> <kind> show|pause|resume|cap|uncap|weight`.
//! - `config`: `config check api|worker|migrate` (the settings, validated, nothing connected).
//! - `shadow`: `shadow rules|clear|report` (candidate scoring rules compared with the live).
//! - `bench`: the runtime and logs of `bench` (the benchmark itself is [`crate::bench`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leadq_jobs::kinds;
use leadq_platform::config::{Needs, Settings};

mod audit;
mod bench;
mod billing;
mod config;
mod dlq;
mod doctor;
mod key;
mod lead;
mod migrate;
mod operator;
mod queue;
mod serve;
mod shadow;
mod tenant;

/// leadq: multi-tenant job-queue platform for lead qualification, CRM sync and chat events.
#[derive(Debug, Parser)]
#[command(name = "leadq", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API on LEADQ_API_ADDR.
    Api,
    /// Run the workers of the kinds in LEADQ_WORKER_KINDS (default: every kind); health and
    /// metrics on LEADQ_WORKER_ADDR.
    Worker,
    /// Apply pending database migrations.
    Migrate,
    /// Tenant administration.
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
        /// Who is acting, recorded as `operator:<name>` (create, set-limits, set-kind, update).
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// API-key administration (operator actions, audited).
    Key {
        #[command(subcommand)]
        command: key::KeyCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// The registry of platform operators (audited): who may use an operator token and
    /// cause operator jobs, with which permissions.
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Lead administration.
    Lead {
        #[command(subcommand)]
        command: lead::LeadCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Dead-letter operations (operator actions, audited).
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Per-tenant queue controls: pause, resume, concurrency cap, share (audited).
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Billing reconciliation: signed baselines of limits and entitlements, compared with the
    /// live configuration and the audited changes since.
    Billing {
        #[command(subcommand)]
        command: billing::BillingCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Audit-trail tools.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>` (accept-truncation).
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Shadow comparison: candidate scoring rules run beside a tenant's live ones (audited).
    Shadow {
        #[command(subcommand)]
        command: shadow::ShadowCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Queue benchmark (docs/bench-protocol.md); prints one JSON line.
    Bench(crate::bench::BenchArgs),
    /// Release-readiness checklist; exit 1 when any check fails.
    Doctor(doctor::DoctorArgs),
    /// Print the API's OpenAPI document (what /openapi.json serves; the committed
    /// openapi.json is this output).
    Openapi,
}

impl Command {
    /// The settings a command needs; `None` for commands that read none.
    fn needs(&self) -> Option<Needs> {
        match self {
            // Doctor reads its own settings: an invalid one is a failed check in its report.
            Command::Bench(_) | Command::Doctor(_) | Command::Openapi | Command::Config { .. } => {
                None
            }
            Command::Lead { command, .. } => Some(Needs {
                database: true,
                redis: command.needs_redis(),
                keys: true,
            }),
            Command::Api
            | Command::Worker
            | Command::Dlq { .. }
            | Command::Queue { .. }
            | Command::Billing { .. }
            | Command::Tenant {
                command: tenant::TenantCommand::SetLimits { .. },
                ..
            } => Some(Needs {
                database: true,
                redis: true,
                keys: true,
            }),
            Command::Tenant {
                command: tenant::TenantCommand::Update(_),
                ..
            } => Some(Needs {
                database: true,
                redis: false,
                keys: true,
            }),
            Command::Migrate
            | Command::Tenant { .. }
            | Command::Audit { .. }
            | Command::Operator { .. }
            | Command::Shadow { .. }
            | Command::Key { .. } => Some(Needs {
                database: true,
                redis: false,
                keys: false,
            }),
        }
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    leadq_platform::telemetry::log_panics();
    let cli = Cli::parse();
    let settings = match cli.command.needs() {
        None => None,
        Some(needs) => match Settings::from_env(needs, kinds::CATALOGUE) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("leadq: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let mut builder = match &cli.command {
        Command::Bench(args) => bench::runtime(args),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = &runtime;
    match (cli.command, settings) {
        (Command::Bench(args), _) => bench::run(rt, args),
        (Command::Openapi, _) => {
            print!(
                "{}",
                leadq_api::openapi::to_json(&leadq_api::openapi_document())
            );
            ExitCode::SUCCESS
        }
        (Command::Doctor(args), _) => doctor::run(rt, args),
        (Command::Config { command }, _) => config::run(command),
        (Command::Api, Some(s)) => serve::api(rt, &s),
        (Command::Worker, Some(s)) => serve::worker(rt, s),
        (Command::Migrate, Some(s)) => migrate::run(rt, &s),
        (Command::Tenant { command, operator }, Some(s)) => tenant::run(rt, &s, &operator, command),
        (Command::Key { command, operator }, Some(s)) => key::run(rt, &s, &operator, command),
        (Command::Operator { command, operator }, Some(s)) => {
            operator::run(rt, &s, &operator, command)
        }
        (Command::Lead { command, operator }, Some(s)) => lead::run(rt, &s, &operator, command),
        (Command::Audit { command, operator }, Some(s)) => audit::run(rt, &s, &operator, command),
        (Command::Billing { command, operator }, Some(s)) => {
            billing::run(rt, &s, &operator, command)
        }
        (Command::Shadow { command, operator }, Some(s)) => shadow::run(rt, &s, &operator, command),
        (Command::Dlq { command, operator }, Some(s)) => dlq::run(rt, &s, &operator, command),
        (Command::Queue { command, operator }, Some(s)) => queue::run(rt, &s, &operator, command),
        (_, None) => exit_code(Err(anyhow::anyhow!(
            "settings were not loaded for this command"
        ))),
    }
}

/// A command's result as the process's exit code: 0, or 1 with the error (and its causes)
/// logged and printed to stderr as `leadq: …`.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Scrubbed like any log line: an error's causes may quote what a command was given.
            let text = format!("{e:#}");
            let text = leadq_platform::scrub::global().scrub(&text);
            tracing::error!(error = %text, "leadq failed.");
            eprintln!("leadq: {text}");
            ExitCode::FAILURE
        }
    }
}

/// An operator command refused for its input exits 2 with `invalid_request: …`; other results
/// as [`exit_code`].
fn ops_exit_code(result: anyhow::Result<()>) -> ExitCode {
    use leadq_jobs::ops::deadletters::OpsError;
    use leadq_queue::QueueError;
    // Bad input is exit 2, whichever layer refused it: the operator's own, or the engine's (a
    // cursor it cannot read, as the API's error layer maps it too), not a failure to retry.
    match result {
        Err(e) => match e.downcast_ref::<OpsError>() {
            Some(OpsError::Invalid(why)) | Some(OpsError::Queue(QueueError::Invalid(why))) => {
                eprintln!("invalid_request: {why}");
                ExitCode::from(2)
            }
            _ => exit_code(Err(e)),
        },
        ok => exit_code(ok),
    }
}
