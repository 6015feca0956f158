//! `leadq audit verify`: seals what is committed, then recomputes the audit trail's chains.
//! `leadq audit seal`: seals what is committed (what every worker does continuously).
//!
//! Both need `LEADQ_AUDIT_KEYS`. `verify` prints one JSON line per chain on stdout and exits 1
//! when any chain is broken (or holds rows unsealed for too long), so a cron job or a deploy
//! check can act on the exit code alone.

use std::process::ExitCode;

use leadq_platform::config::Settings;
use leadq_platform::{db, telemetry};
use tokio::runtime::Runtime;

use super::exit_code;

#[derive(Debug, clap::Subcommand)]
pub(super) enum AuditCommand {
    /// Seal, then recompute the chains; print one JSON line per chain; exit 1 if any is broken.
    Verify {
        /// Only this tenant's chain (default: every tenant and the platform chain).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Link every committed, unsealed row into its chain; print {"sealed": n}.
    Seal,
    /// Seal, then write the rows sealed since a time as signed JSON lines (for storage off the
    /// box; see docs/audit.md).
    Export {
        /// RFC 3339 time, e.g. 2026-12-01T00:00:00Z.
        #[arg(long)]
        since: chrono::DateTime<chrono::Utc>,
        /// Only this tenant's chain (default: every tenant and the platform chain).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Runs a `leadq audit` command.
pub(super) fn run(runtime: &Runtime, settings: &Settings, command: AuditCommand) -> ExitCode {
    telemetry::init_command_logs(settings);
    let tenant = match command {
        AuditCommand::Verify { tenant } => tenant,
        AuditCommand::Export { since, tenant } => {
            return exit_code(runtime.block_on(export(settings, since, tenant.as_deref())))
        }
        AuditCommand::Seal => {
            return exit_code(runtime.block_on(async {
                let pool = db::connect(settings.database_url(), 2).await?;
                let n = leadq_platform::audit::seal::seal_all(&pool, audit_keys(settings)?).await?;
                println!("{}", serde_json::json!({ "sealed": n }));
                Ok(())
            }))
        }
    };
    match runtime.block_on(audit_verify(settings, tenant.as_deref())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => exit_code(Err(e)),
    }
}

/// Seals, then prints the signed lines of every chain (or one tenant's) since `since`.
async fn export(
    settings: &Settings,
    since: chrono::DateTime<chrono::Utc>,
    slug: Option<&str>,
) -> anyhow::Result<()> {
    use leadq_platform::db::Scope;
    let keys = audit_keys(settings)?;
    let pool = db::connect(settings.database_url(), 2).await?;
    leadq_platform::audit::seal::seal_all(&pool, keys).await?;
    let scopes = match slug {
        Some(s) => vec![Scope::Tenant(tenant_id(&pool, s).await?)],
        None => {
            let mut all: Vec<Scope> =
                sqlx::query_scalar::<_, uuid::Uuid>("select id from tenants order by slug")
                    .fetch_all(&pool)
                    .await?
                    .into_iter()
                    .map(Scope::Tenant)
                    .collect();
            all.push(Scope::Platform);
            all
        }
    };
    for scope in scopes {
        for line in leadq_platform::audit::export::lines(&pool, scope, since, keys).await? {
            println!("{line}");
        }
    }
    Ok(())
}

async fn tenant_id(pool: &sqlx::PgPool, slug: &str) -> anyhow::Result<uuid::Uuid> {
    let id: Option<uuid::Uuid> = sqlx::query_scalar("select id from tenants where slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await?;
    id.ok_or_else(|| anyhow::anyhow!("no tenant with slug {slug:?}"))
}

pub(super) fn audit_keys(settings: &Settings) -> anyhow::Result<&leadq_platform::keyring::Keyring> {
    settings.audit_keys.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "LEADQ_AUDIT_KEYS (or _FILE) is required to seal or verify the audit chains"
        )
    })
}

/// Seals what is committed, then verifies the audit chains; prints one JSON line per chain.
/// `Ok(false)`: a chain is broken.
async fn audit_verify(settings: &Settings, slug: Option<&str>) -> anyhow::Result<bool> {
    use leadq_platform::audit::{verify_all, verify_chain};
    use leadq_platform::db::Scope;
    let keys = audit_keys(settings)?;
    let pool = db::connect(settings.database_url(), 2).await?;
    leadq_platform::audit::seal::seal_all(&pool, keys).await?;
    let reports = match slug {
        None => verify_all(&pool, keys).await?,
        Some(s) => {
            vec![verify_chain(&pool, Scope::Tenant(tenant_id(&pool, s).await?), keys).await?]
        }
    };
    for report in &reports {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(reports.iter().all(|r| r.intact()))
}
