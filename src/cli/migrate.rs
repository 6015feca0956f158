//! `leadq migrate`: applies pending database migrations (the ones `leadq_platform::db` embeds)
//! as the migration owner, then grants the runtime role its privileges
//! (`leadq_platform::roles::grant_runtime`).

use std::process::ExitCode;

use anyhow::Context;
use leadq_platform::config::Settings;
use leadq_platform::roles::{self, Granted};
use leadq_platform::{db, telemetry};
use sqlx::postgres::PgConnectOptions;
use tokio::runtime::Runtime;

use super::exit_code;

/// Runs `leadq migrate`: connects with `LEADQ_MIGRATION_DATABASE_URL` (or `DATABASE_URL`)
/// and grants `LEADQ_RUNTIME_ROLE` (or the user of `DATABASE_URL`).
pub(super) fn run(runtime: &Runtime, settings: &Settings) -> ExitCode {
    telemetry::init_command_logs(settings);
    exit_code(runtime.block_on(async {
        let owner_url = settings
            .migration_database_url
            .as_ref()
            .unwrap_or(settings.database_url());
        let role = match &settings.runtime_role {
            Some(r) => r.clone(),
            None => runtime_user(settings)?,
        };
        let pool = db::connect(owner_url, 2).await?;
        db::migrate(&pool).await?;
        match roles::grant_runtime(&pool, &role).await? {
            Granted::Granted => {
                tracing::info!(runtime_role = %role, "Migrations applied; runtime role granted.");
            }
            Granted::SameRole => tracing::warn!(
                runtime_role = %role,
                "Migrations applied as the runtime role itself: it owns the schema, so leadq \
                 api and leadq worker will refuse to run as it. Migrate as a separate owner role \
                 (LEADQ_MIGRATION_DATABASE_URL); see docs/security.md."
            ),
        }
        Ok(())
    }))
}

/// The user named in `DATABASE_URL`.
fn runtime_user(settings: &Settings) -> anyhow::Result<String> {
    let opts: PgConnectOptions = settings
        .database_url()
        .expose()
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    Ok(opts.get_username().to_owned())
}
