//! `leadq api` and `leadq worker`: the two long-running services, until SIGINT or SIGTERM.
//!
//! Both get full telemetry (logs, Sentry, metrics) and, when configured, error alerts to
//! Telegram (`leadq_notify`: the log layer, the panic hook and the sender tasks). The
//! telemetry guard is dropped when the service returns, before its result becomes the exit
//! code and the final log line.

use std::process::ExitCode;

use leadq_platform::config::Settings;
use leadq_platform::shutdown::shutdown_signal;
use leadq_platform::telemetry;
use tokio::runtime::Runtime;

use super::exit_code;

/// `leadq api`: serves the HTTP API on `LEADQ_API_ADDR`.
pub(super) fn api(runtime: &Runtime, settings: &Settings) -> ExitCode {
    let result = {
        let _guard = telemetry::init(settings, "leadq-api", leadq_notify::layer(settings));
        runtime.block_on(async {
            leadq_notify::start(settings, "leadq-api").await?;
            let app = leadq_api::Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        })
    };
    exit_code(result)
}

/// `leadq worker`: runs the workers of the kinds in `LEADQ_WORKER_KINDS` (default: all).
pub(super) fn worker(runtime: &Runtime, settings: Settings) -> ExitCode {
    let result = {
        let _guard = telemetry::init(&settings, "leadq-worker", leadq_notify::layer(&settings));
        runtime.block_on(async {
            leadq_notify::start(&settings, "leadq-worker").await?;
            let worker = leadq_worker::Worker::build(settings).await?;
            worker.run_until_stopped(shutdown_signal()).await
        })
    };
    exit_code(result)
}
