//! `leadq migrate`: applies pending database migrations (the ones `leadq_platform::db` embeds).

use std::process::ExitCode;

use leadq_platform::config::Settings;
use leadq_platform::{db, telemetry};
use tokio::runtime::Runtime;

use super::exit_code;

/// Runs `leadq migrate`.
pub(super) fn run(runtime: &Runtime, settings: &Settings) -> ExitCode {
    telemetry::init_logs(&settings.log_filter, settings.log_format);
    exit_code(runtime.block_on(async {
        let pool = db::connect(settings.database_url(), 2).await?;
        db::migrate(&pool).await?;
        tracing::info!("Migrations applied.");
        Ok(())
    }))
}
