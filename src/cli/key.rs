//! `leadq key create|list|revoke|rotate`: API-key administration (operator actions, audited).
//!
//! A key's secret is printed once, when it is made (create, rotate); `list` never shows one.
//! Input the key store refuses exits 2 with `invalid_request: …`.

use std::process::ExitCode;

use leadq_platform::config::Settings;
use leadq_platform::{db, keys, telemetry};
use tokio::runtime::Runtime;

use super::exit_code;

#[derive(Debug, clap::Subcommand)]
pub(super) enum KeyCommand {
    /// Create a key; prints {key_id, tenant_id, api_key, scopes, expires_at} once.
    Create {
        /// Tenant slug.
        tenant: String,
        /// Comma-separated: leads:write, leads:read, status:read, admin, webhooks.
        #[arg(long)]
        scopes: String,
        /// Lifetime, e.g. 90d, 12h.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List a tenant's keys (never their secrets); one JSON line per key.
    List {
        /// Tenant slug.
        tenant: String,
    },
    /// Revoke a key at once.
    Revoke {
        /// Key id.
        key_id: uuid::Uuid,
    },
    /// Make a successor with the same scopes; the old key stays valid for --overlap.
    Rotate {
        /// Key id.
        key_id: uuid::Uuid,
        /// How long the old key stays valid, e.g. 7d.
        #[arg(long, default_value = "7d")]
        overlap: String,
        /// Lifetime of the new key, e.g. 90d (default: the old key's lifetime, or none if it
        /// had no expiry).
        #[arg(long)]
        expires_in: Option<String>,
    },
}

/// Runs a `leadq key` command.
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    command: KeyCommand,
) -> ExitCode {
    telemetry::init_command_logs(settings);
    let result = match runtime.block_on(key_command(settings, operator, command)) {
        Ok(()) => Ok(()),
        Err(e)
            if e.downcast_ref::<keys::KeyError>()
                .is_some_and(|k| !matches!(k, keys::KeyError::Db(_))) =>
        {
            eprintln!("invalid_request: {e}");
            return ExitCode::from(2);
        }
        Err(e) => Err(e),
    };
    exit_code(result)
}

/// Runs a key command; results as JSON lines on stdout.
async fn key_command(settings: &Settings, operator: &str, cmd: KeyCommand) -> anyhow::Result<()> {
    let pool = db::connect(settings.database_url(), 2).await?;
    let actor = format!("operator:{operator}");
    let lifetime = |s: Option<String>| s.as_deref().map(keys::parse_duration).transpose();
    match cmd {
        KeyCommand::Create {
            tenant,
            scopes,
            expires_in,
        } => {
            let scopes = keys::parse_scopes(&scopes)?;
            let created =
                keys::create(&pool, &actor, &tenant, scopes, lifetime(expires_in)?).await?;
            println!("{}", serde_json::to_string(&created)?);
        }
        KeyCommand::List { tenant } => {
            for k in keys::list(&pool, &tenant).await? {
                println!("{}", serde_json::to_string(&k)?);
            }
        }
        KeyCommand::Revoke { key_id } => {
            keys::revoke(&pool, &actor, key_id).await?;
            println!("{}", serde_json::json!({"key_id": key_id, "revoked": true}));
        }
        KeyCommand::Rotate {
            key_id,
            overlap,
            expires_in,
        } => {
            let overlap = keys::parse_duration(&overlap)?;
            let created =
                keys::rotate(&pool, &actor, key_id, overlap, lifetime(expires_in)?).await?;
            println!("{}", serde_json::to_string(&created)?);
        }
    }
    Ok(())
}
