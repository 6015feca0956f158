//! `leadq config check <api|worker|migrate>`: loads the settings that command would load, from
//! the same environment and `*_FILE` files, and reports every problem at once without
//! connecting to anything. For a deployment's pre-flight (a new ConfigMap, a rotated Secret)
//! and for CI, which runs it with each Kubernetes manifest's environment
//! (`scripts/check-deploy`).

use std::process::ExitCode;

use leadq_jobs::kinds;
use leadq_platform::config::{Needs, Settings};

/// `leadq config` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(super) enum ConfigCommand {
    /// Validate the configuration of a command; exit 0 when valid, 2 listing every problem.
    Check {
        /// The command whose configuration to check.
        #[arg(value_enum)]
        command: Role,
    },
}

/// The long-running or deploy-time commands whose settings can be checked.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum Role {
    /// `leadq api`.
    Api,
    /// `leadq worker`.
    Worker,
    /// `leadq migrate`.
    Migrate,
}

impl Role {
    /// What the command itself asks of the configuration (`super::Command::needs`).
    fn needs(self) -> Needs {
        match self {
            Role::Api | Role::Worker => Needs {
                database: true,
                redis: true,
                keys: true,
            },
            Role::Migrate => Needs {
                database: true,
                redis: false,
                keys: false,
            },
        }
    }
}

/// Runs `leadq config check`.
pub(super) fn run(command: ConfigCommand) -> ExitCode {
    let ConfigCommand::Check { command: role } = command;
    match Settings::from_env(role.needs(), kinds::CATALOGUE) {
        Ok(settings) => {
            let what = match role {
                Role::Api => format!("api on {}", settings.api_addr),
                Role::Worker => format!(
                    "worker of {} on {}",
                    settings.queue.worker_kinds.join(","),
                    settings.worker_addr
                ),
                Role::Migrate => "migrate".to_owned(),
            };
            println!("leadq: configuration valid for {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("leadq: {e}");
            ExitCode::from(2)
        }
    }
}
