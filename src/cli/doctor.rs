//! `leadq doctor`: the release-readiness checklist (`leadq_jobs::ops::doctor`). A checklist on
//! a terminal, `--json` for CI; exit 1 when any check fails (warnings and skips pass).

use std::process::ExitCode;
use std::time::Duration;

use leadq_jobs::kinds;
use leadq_jobs::ops::doctor::{self, Options, Report};
use leadq_jobs::ops::security::Status;
use leadq_platform::config::{Needs, Settings};
use tokio::runtime::Runtime;

/// `leadq doctor` options.
#[derive(Debug, clap::Args)]
pub(super) struct DoctorArgs {
    /// Print one JSON object (`{"status", "checks": [{name, status, detail}]}`).
    #[arg(long)]
    json: bool,
    /// Also check this Prometheus: rule files loaded, no alert firing (but the watchdog).
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// Also check this Alertmanager: a receiver that delivers somewhere.
    #[arg(long, value_name = "URL")]
    alertmanager: Option<String>,
    /// The canary must have passed within this many minutes.
    #[arg(long, default_value_t = 10, value_name = "MINUTES")]
    canary_max_age: u64,
}

/// Runs `leadq doctor`. Reads its own configuration, so that an invalid one is a failed check
/// in the same output rather than a different error.
pub(super) fn run(runtime: &Runtime, args: DoctorArgs) -> ExitCode {
    let needs = Needs {
        database: true,
        redis: true,
        keys: true,
    };
    let report = match Settings::from_env(needs, kinds::CATALOGUE) {
        Err(e) => doctor::config_failed(&e.problems),
        Ok(settings) => {
            let opts = Options {
                canary_max_age: Duration::from_secs(args.canary_max_age.saturating_mul(60)),
                prometheus: args.prometheus,
                alertmanager: args.alertmanager,
            };
            runtime.block_on(doctor::run(&settings, &opts, &reqwest::Client::new()))
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("leadq: cannot print the report: {e}"),
        }
    } else {
        print_checklist(&report);
    }
    if report.status == Status::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_checklist(report: &Report) {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        let mark = match c.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        println!("[{mark}] {:width$}  {}", c.name, c.detail);
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .collect();
    if failed.is_empty() {
        println!("\nready: no check failed");
    } else {
        println!(
            "\nNOT READY: {} failed ({})",
            failed.len(),
            failed.join(", ")
        );
    }
}
