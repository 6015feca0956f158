//! `leadq audit verify`: seals what is committed, then recomputes the audit trail's chains.
//! `leadq audit seal`: seals what is committed (what every worker does continuously).
//! `leadq audit export`: sealed rows as signed JSON lines, for storage off the box; `--after`
//! continues from the last export's lines.
//! `leadq audit accept-truncation`: after a chain lost its newest rows (the sealer holds it),
//! records the loss as the chain's next row so that sealing resumes.
//!
//! All need `LEADQ_AUDIT_KEYS`. `verify` prints one JSON line per chain on stdout and exits 1
//! when any chain is broken (or holds rows unsealed for too long), so a cron job or a deploy
//! check can act on the exit code alone.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use leadq_platform::audit::{export, seal};
use leadq_platform::config::Settings;
use leadq_platform::db::Scope;
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
    /// Link every committed, unsealed row into its chain; print {"sealed": n, "held": [...]};
    /// exit 1 if a chain is held (its newest rows are gone: see accept-truncation).
    Seal,
    /// Seal, then write sealed rows as signed JSON lines (for storage off the box; see
    /// docs/audit.md): every chain's rows after the last line of a previous export (`--after`),
    /// or written since a time (`--since`), or both (`--since` for chains the file does not
    /// name).
    #[command(group(clap::ArgGroup::new("from").required(true).multiple(true).args(["since", "after"])))]
    Export {
        /// RFC 3339 time, e.g. 2026-12-01T00:00:00Z: rows written at or after it. A row is
        /// sealed some seconds after it is written, so consecutive exports by time can miss a
        /// row; ship continuously with --after.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// A previous export's lines (or at least each chain's last line): continue after them,
        /// after checking that each chain still holds its last line's row with that link.
        #[arg(long)]
        after: Option<PathBuf>,
        /// Only this tenant's chain (default: every tenant and the platform chain).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// After a chain lost its newest rows (verify reports `tail_record: "ahead"`, the sealer
    /// holds it): record the loss as the chain's next row (`audit.truncation_accepted`, by
    /// `operator:<name>`) and let sealing resume. Exit 1 if the chain is not truncated.
    #[command(group(clap::ArgGroup::new("chain").required(true).args(["tenant", "platform"])))]
    AcceptTruncation {
        /// The tenant's chain (slug).
        #[arg(long)]
        tenant: Option<String>,
        /// The platform's chain.
        #[arg(long)]
        platform: bool,
    },
}

/// Runs a `leadq audit` command.
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    command: AuditCommand,
) -> ExitCode {
    telemetry::init_command_logs(settings);
    let tenant = match command {
        AuditCommand::Verify { tenant } => tenant,
        AuditCommand::Export {
            since,
            after,
            tenant,
        } => {
            return exit_code(runtime.block_on(run_export(
                settings,
                since,
                after.as_deref(),
                tenant.as_deref(),
            )))
        }
        AuditCommand::Seal => {
            return exit_code(runtime.block_on(async {
                let pool = db::connect(settings.database_url(), 2).await?;
                let pass = seal::seal_all(&pool, audit_keys(settings)?).await?;
                println!(
                    "{}",
                    serde_json::json!({ "sealed": pass.sealed, "held": pass.held })
                );
                match pass.held.first() {
                    Some(held) => Err(anyhow::anyhow!("{held}")),
                    None => Ok(()),
                }
            }))
        }
        AuditCommand::AcceptTruncation { tenant, .. } => {
            return exit_code(runtime.block_on(accept_truncation(
                settings,
                tenant.as_deref(),
                &format!("operator:{operator}"),
            )))
        }
    };
    match runtime.block_on(audit_verify(settings, tenant.as_deref())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => exit_code(Err(e)),
    }
}

/// Seals, then prints the signed lines of every chain (or one tenant's): after the chains'
/// last lines in `after`, else since `since`, else from each chain's first row. A chain that
/// no longer holds what was exported is named on stderr and makes the command fail after the
/// other chains' lines are written.
async fn run_export(
    settings: &Settings,
    since: Option<chrono::DateTime<chrono::Utc>>,
    after: Option<&Path>,
    slug: Option<&str>,
) -> anyhow::Result<()> {
    let keys = audit_keys(settings)?;
    let ends = match after {
        Some(path) => shipped_ends(path, keys)?,
        None => BTreeMap::new(),
    };
    let pool = db::connect(settings.database_url(), 2).await?;
    seal::seal_all(&pool, keys).await?;
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
    let mut diverged = Vec::new();
    for scope in scopes {
        let name = match scope {
            Scope::Tenant(t) => t.to_string(),
            Scope::Platform => "platform".to_owned(),
        };
        let start = match ends.get(&name) {
            Some((seal_seq, mac)) => export::Start::After {
                seal_seq: *seal_seq,
                mac: mac.clone(),
            },
            None => export::Start::Since(since),
        };
        match export::lines(&pool, scope, &start, keys).await {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
            }
            Err(e @ export::ExportError::Diverged { .. }) => {
                eprintln!("{e}");
                diverged.push(name);
            }
            Err(export::ExportError::Db(e)) => return Err(e.into()),
        }
    }
    if diverged.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} chain(s) no longer hold what was exported: {}",
            diverged.len(),
            diverged.join(", ")
        )
    }
}

/// Each chain's last exported line in the file at `path` (see [`export::shipped_ends`]).
fn shipped_ends(
    path: &Path,
    keys: &leadq_platform::keyring::Keyring,
) -> anyhow::Result<BTreeMap<String, (i64, Vec<u8>)>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read --after {}: {e}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("cannot read --after {}: {e}", path.display()))?;
    export::shipped_ends(lines, keys).map_err(|line| {
        anyhow::anyhow!(
            "line {line} of {} is not a line of `leadq audit export` signed with a key of \
             LEADQ_AUDIT_KEYS",
            path.display()
        )
    })
}

/// Records a truncated chain's loss and lets sealing resume; prints what was accepted.
async fn accept_truncation(
    settings: &Settings,
    slug: Option<&str>,
    actor: &str,
) -> anyhow::Result<()> {
    audit_keys(settings)?;
    let pool = db::connect(settings.database_url(), 2).await?;
    let scope = match slug {
        Some(s) => Scope::Tenant(tenant_id(&pool, s).await?),
        None => Scope::Platform,
    };
    match seal::accept_truncation(&pool, scope, actor, "cli").await? {
        Some(held) => {
            println!("{}", serde_json::json!({ "accepted": held }));
            Ok(())
        }
        None => anyhow::bail!(
            "the chain ends where its last seal recorded: there is no truncation to accept"
        ),
    }
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
    let keys = audit_keys(settings)?;
    let pool = db::connect(settings.database_url(), 2).await?;
    // A held chain is sealed no further; the verification below names it.
    seal::seal_all(&pool, keys).await?;
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
