//! `leadq lead erase`: the right to be forgotten, from a terminal.
//!
//! The erasure itself (PostgreSQL rows, queued jobs, the audit record) is
//! `leadq_jobs::lead::erase`; this file finds the tenant and connects to both stores.

use std::process::ExitCode;

use leadq_platform::config::Settings;
use leadq_platform::{db, telemetry};
use tokio::runtime::Runtime;

use super::exit_code;

#[derive(Debug, clap::Subcommand)]
pub(super) enum LeadCommand {
    /// Right to be forgotten: delete a lead's personal data from PostgreSQL and from queued
    /// jobs; prints {lead_deleted, jobs_removed, jobs_running}.
    Erase {
        /// Tenant slug.
        tenant: String,
        /// The lead's external id.
        external_id: String,
    },
}

/// Runs a `leadq lead` command.
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    command: LeadCommand,
) -> ExitCode {
    telemetry::init_logs(&settings.log_filter, settings.log_format);
    let LeadCommand::Erase {
        tenant,
        external_id,
    } = command;
    exit_code(runtime.block_on(async {
        let pool = db::connect(settings.database_url(), 2).await?;
        let tenant_id: uuid::Uuid = sqlx::query_scalar("select id from tenants where slug = $1")
            .bind(&tenant)
            .fetch_optional(&pool)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no tenant with slug {tenant:?}"))?;
        let signer = leadq_queue::signing::Signer::new(settings.signing_keys().clone());
        let queue =
            leadq_queue::Queue::connect(settings.redis_url(), settings.queue.clone(), signer)
                .await?;
        let sealer = leadq_jobs::pii::Sealer::new(settings.data_keys().clone());
        let erased = leadq_jobs::lead::erase(
            &pool,
            &queue,
            &sealer,
            tenant_id,
            &external_id,
            &format!("operator:{operator}"),
            "cli",
        )
        .await?;
        println!("{}", serde_json::to_string(&erased)?);
        Ok(())
    }))
}
