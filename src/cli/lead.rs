//! `leadq lead erase|export|reseal`: a tenant's leads from a terminal.
//!
//! The work itself lives in `leadq_jobs`: the erasure (`lead::erase`, `lead::erase_by_contact`:
//! PostgreSQL rows, queued jobs, the CRM, the audit record), the tokenized export
//! (`lead::export`) and the conversion of personal data to its sealed form (`pii::at_rest`).
//! This file finds the tenant and connects to the stores.

use std::process::ExitCode;

use leadq_jobs::lead::ContactField;
use leadq_jobs::pii::Sealer;
use leadq_platform::config::Settings;
use leadq_platform::{db, telemetry};
use tokio::runtime::Runtime;

use super::exit_code;

#[derive(Debug, clap::Subcommand)]
pub(super) enum LeadCommand {
    /// Right to be forgotten: delete a lead's personal data from PostgreSQL, queued jobs and
    /// the CRM; prints {lead_deleted, jobs_removed, jobs_running, crm}. With --email or
    /// --phone instead of an external id: every lead of the tenant with that contact (blind
    /// index) and queued jobs carrying it; prints {leads, jobs_removed, jobs_running}.
    #[command(group(clap::ArgGroup::new("who").required(true).args(["external_id", "email", "phone"])))]
    Erase {
        /// Tenant slug.
        tenant: String,
        /// The lead's external id.
        external_id: Option<String>,
        /// Erase the person with this e-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Erase the person with this phone number.
        #[arg(long)]
        phone: Option<String>,
    },
    /// The tenant's leads as CSV on stdout, personal fields replaced by stable per-tenant
    /// tokens (audited as `lead.export`); a summary {rows, unreadable} on stderr.
    Export {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// Output format (only `csv`).
        #[arg(long, default_value = "csv", value_parser = ["csv"])]
        format: String,
    },
    /// Converts personal data written before sealing at rest, re-seals what an older data key
    /// sealed and re-indexes under a newer index key, in batches, while everything runs (what
    /// the worker's `pii_reseal` schedule does); prints {tenants, leads, messages,
    /// unreadable, skipped_locked}; exit 1 unless everything is under the current keys.
    Reseal {
        /// Rows per transaction.
        #[arg(long, default_value_t = leadq_jobs::pii::at_rest::DEFAULT_BATCH)]
        batch: i64,
    },
}

impl LeadCommand {
    /// Whether the command needs Redis (erasures remove queued jobs).
    pub(super) fn needs_redis(&self) -> bool {
        matches!(self, Self::Erase { .. })
    }
}

/// Runs a `leadq lead` command.
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    command: LeadCommand,
) -> ExitCode {
    telemetry::init_command_logs(settings);
    let actor = format!("operator:{operator}");
    exit_code(runtime.block_on(async {
        let pool = db::connect(settings.database_url(), 2).await?;
        let sealer = Sealer::from_settings(settings);
        match command {
            LeadCommand::Erase {
                tenant,
                external_id,
                email,
                phone,
            } => {
                let tenant_id = tenant_id(&pool, &tenant).await?;
                let signer = leadq_queue::signing::Signer::new(settings.signing_keys().clone());
                let queue = leadq_queue::Queue::connect(
                    settings.redis_url(),
                    settings.queue.clone(),
                    signer,
                )
                .await?;
                let by = match (external_id, email, phone) {
                    (Some(id), ..) => {
                        // The form every stored lead's id has (the API refuses others too).
                        if !leadq_queue::envelope::valid_id(&id) {
                            anyhow::bail!(
                                "no lead can have this external id: 1-128 printable ASCII \
                                 characters, no spaces"
                            );
                        }
                        let erased = leadq_jobs::lead::erase(
                            &pool, &queue, &sealer, tenant_id, &id, &actor, "cli",
                        )
                        .await?;
                        println!("{}", serde_json::to_string(&erased)?);
                        return Ok(());
                    }
                    (None, Some(e), _) => (ContactField::Email, e),
                    (None, None, Some(p)) => (ContactField::Phone, p),
                    (None, None, None) => unreachable!("clap requires one of them"),
                };
                let erased = leadq_jobs::lead::erase_by_contact(
                    &pool, &queue, &sealer, tenant_id, by.0, &by.1, &actor, "cli",
                )
                .await?;
                println!("{}", serde_json::to_string(&erased)?);
            }
            LeadCommand::Export { tenant, format: _ } => {
                use leadq_jobs::lead::export;
                let tenant_id = tenant_id(&pool, &tenant).await?;
                export::audit_start(&pool, tenant_id, &actor).await?;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let done = export::export_csv(&pool, &sealer, tenant_id, &mut out).await?;
                export::audit_done(&pool, tenant_id, &actor, &done).await?;
                eprintln!("{}", serde_json::to_string(&done)?);
            }
            LeadCommand::Reseal { batch } => {
                let report =
                    leadq_jobs::pii::at_rest::reseal(&pool, &sealer, batch, &actor).await?;
                println!("{}", serde_json::to_string(&report)?);
                if !report.complete() {
                    anyhow::bail!(
                        "{} row(s) do not open and {} were held by running jobs; run again, \
                         and keep the old keys until it reports none",
                        report.unreadable,
                        report.skipped_locked
                    );
                }
            }
        }
        Ok(())
    }))
}

async fn tenant_id(pool: &sqlx::PgPool, slug: &str) -> anyhow::Result<uuid::Uuid> {
    leadq_platform::tenant::id_by_slug(pool, slug)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant with slug {slug:?}"))
}
