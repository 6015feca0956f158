//! `leadq tenant create|set-kind|update|set-limits`: tenant administration.
//!
//! `create` exits 3 for a slug that exists and 2 for a bad one; the others exit 2 with
//! `invalid_request: …` for input they refuse. `update` reads secrets from files or stdin,
//! never from the command line (where `ps` and shell history would keep them).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use leadq_jobs::integrations::settings::{self, TenantUpdate};
use leadq_jobs::kinds;
use leadq_platform::config::Settings;
use leadq_platform::secret::Secret;
use leadq_platform::{db, telemetry, tenant};
use tokio::runtime::Runtime;

use super::exit_code;

#[derive(Debug, clap::Subcommand)]
pub(super) enum TenantCommand {
    /// Create a tenant and its first API key; prints {tenant_id, slug, api_key} once.
    Create {
        /// Lower-case slug, e.g. `acme`.
        slug: String,
    },
    /// Enable, shadow or disable a job kind for a tenant (audited).
    SetKind {
        /// Tenant slug.
        slug: String,
        /// Job kind, e.g. lead_score.
        kind: String,
        /// enabled, shadow (run without side effects, record the would-be outcome) or disabled.
        #[arg(value_parser = ["enabled", "shadow", "disabled"])]
        mode: String,
    },
    /// Configure a tenant's integrations and scoring (audited; secrets are read from files or
    /// `-` for stdin, never from the command line). Prints {tenant, changed}.
    Update(Box<TenantUpdateArgs>),
    /// Change a tenant's ingest limits: enqueues an update_billing_limit job (signed,
    /// authorized as an operator action, audited); prints {job_id}.
    SetLimits {
        /// Tenant slug.
        slug: String,
        /// Sustained leads per second.
        #[arg(long)]
        per_second: i32,
        /// Burst above the rate.
        #[arg(long)]
        burst: i32,
        /// Leads per UTC day.
        #[arg(long)]
        leads_per_day: i32,
    },
}

#[derive(Debug, clap::Args)]
pub(super) struct TenantUpdateArgs {
    /// Tenant slug.
    slug: String,
    /// The Chatwoot account whose webhooks /v1/webhooks/chatwoot/<slug> accepts.
    #[arg(long)]
    chatwoot_account_id: Option<i64>,
    /// File holding the Chatwoot webhook secret (`-`: stdin).
    #[arg(long)]
    chatwoot_secret_file: Option<PathBuf>,
    /// File holding the Telegram bot's webhook secret_token (`-`: stdin).
    #[arg(long)]
    telegram_secret_file: Option<PathBuf>,
    /// Base URL of the tenant's HubSpot API (https://api.hubapi.com, or a sandbox).
    #[arg(long)]
    crm_base_url: Option<String>,
    /// File holding a HubSpot private-app token (`-`: stdin).
    #[arg(long, conflicts_with = "crm_oauth_file")]
    crm_token_file: Option<PathBuf>,
    /// File holding OAuth credentials as JSON: {"client_id", "client_secret", "refresh_token"}.
    #[arg(long)]
    crm_oauth_file: Option<PathBuf>,
    /// The unique HubSpot property upserts are keyed by (default email).
    #[arg(long)]
    crm_id_property: Option<String>,
    /// Leads per HubSpot batch call, 1-100 (default 100).
    #[arg(long)]
    crm_batch_size: Option<u16>,
    /// A scoring weight, RULE=POINTS (budget, timeline, company_size, need, contact,
    /// engagement); repeatable.
    #[arg(long = "weight", value_parser = parse_weight)]
    weights: Vec<(String, u8)>,
    /// Score at or above which a lead is hot (qualified).
    #[arg(long)]
    hot_threshold: Option<u8>,
    /// Score at or above which a lead is warm.
    #[arg(long)]
    warm_threshold: Option<u8>,
}

pub(super) fn parse_weight(s: &str) -> Result<(String, u8), String> {
    let (rule, points) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not RULE=POINTS"))?;
    let points: u8 = points
        .parse()
        .map_err(|_| format!("{points:?} is not a number of points (0-100)"))?;
    Ok((rule.to_owned(), points))
}

/// Reads a secret from a file, or stdin for `-`; one trailing newline is not part of it.
fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut raw = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut raw)
            .context("Failed to read the secret from stdin")?;
    } else {
        raw = std::fs::read_to_string(path)
            .with_context(|| format!("Failed to read {}", path.display()))?;
    }
    let s = raw.strip_suffix('\n').unwrap_or(&raw);
    let s = s.strip_suffix('\r').unwrap_or(s);
    Ok(s.to_owned())
}

/// Turns `leadq tenant update` arguments into a [`TenantUpdate`].
fn tenant_update(a: &TenantUpdateArgs) -> anyhow::Result<TenantUpdate> {
    use leadq_jobs::integrations::settings::{CrmAuth, CrmSettings};
    let crm_auth = match (&a.crm_token_file, &a.crm_oauth_file) {
        (Some(p), _) => Some(CrmAuth::PrivateApp {
            token: read_secret(p)?,
        }),
        (None, Some(p)) => Some(
            serde_json::from_str::<OauthFile>(&read_secret(p)?)
                .map(|o| CrmAuth::Oauth {
                    client_id: o.client_id,
                    client_secret: o.client_secret,
                    refresh_token: o.refresh_token,
                })
                .map_err(|e| {
                    anyhow::anyhow!(
                        "--crm-oauth-file must hold {{\"client_id\", \"client_secret\", \"refresh_token\"}} (line {}, column {})",
                        e.line(),
                        e.column()
                    )
                })?,
        ),
        (None, None) => None,
    };
    let crm = match (&a.crm_base_url, crm_auth) {
        (Some(base_url), Some(auth)) => Some(CrmSettings {
            base_url: base_url.clone(),
            auth,
            id_property: a.crm_id_property.clone(),
            batch_size: a.crm_batch_size,
        }),
        (None, None) if a.crm_id_property.is_none() && a.crm_batch_size.is_none() => None,
        _ => anyhow::bail!(
            "a CRM connection needs --crm-base-url and one of --crm-token-file, --crm-oauth-file"
        ),
    };
    Ok(TenantUpdate {
        chatwoot_account_id: a.chatwoot_account_id,
        chatwoot_secret: a
            .chatwoot_secret_file
            .as_deref()
            .map(read_secret)
            .transpose()?
            .map(Secret::new),
        telegram_secret: a
            .telegram_secret_file
            .as_deref()
            .map(read_secret)
            .transpose()?
            .map(Secret::new),
        crm,
        weights: a.weights.iter().cloned().collect(),
        hot_threshold: a.hot_threshold,
        warm_threshold: a.warm_threshold,
    })
}

#[derive(serde::Deserialize)]
struct OauthFile {
    client_id: String,
    client_secret: String,
    refresh_token: String,
}

/// Runs a `leadq tenant` command.
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    command: TenantCommand,
) -> ExitCode {
    telemetry::init_command_logs(settings);
    match command {
        TenantCommand::Create { slug } => create(runtime, settings, operator, &slug),
        TenantCommand::SetKind { slug, kind, mode } => {
            set_kind(runtime, settings, operator, &slug, &kind, &mode)
        }
        TenantCommand::SetLimits {
            slug,
            per_second,
            burst,
            leads_per_day,
        } => {
            let limits = leadq_jobs::ops::limits::Limits {
                ingest_per_second: per_second,
                ingest_burst: burst,
                leads_per_day,
            };
            if let Err(why) = limits.validate() {
                eprintln!("invalid_request: {why}");
                return ExitCode::from(2);
            }
            exit_code(runtime.block_on(set_limits(settings, operator, &slug, limits)))
        }
        TenantCommand::Update(args) => update(runtime, settings, operator, &args),
    }
}

/// `leadq tenant create`: the tenant and its first API key, printed once.
fn create(runtime: &Runtime, settings: &Settings, operator: &str, slug: &str) -> ExitCode {
    let actor = format!("operator:{operator}");
    let res = runtime.block_on(async {
        let pool = db::connect(settings.database_url(), 2).await?;
        Ok::<_, anyhow::Error>(tenant::create(&pool, slug, &actor).await)
    });
    let result = match res {
        Ok(Ok(created)) => {
            match serde_json::to_string(&created) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("leadq: {e}");
                    return ExitCode::FAILURE;
                }
            }
            Ok(())
        }
        Ok(Err(tenant::TenantError::Exists(s))) => {
            eprintln!("tenant_exists: a tenant with slug {s:?} already exists");
            return ExitCode::from(3);
        }
        Ok(Err(e @ tenant::TenantError::BadSlug(_))) => {
            eprintln!("invalid_slug: {e}");
            return ExitCode::from(2);
        }
        Ok(Err(e)) => Err(anyhow::Error::new(e)).context("Failed to create the tenant"),
        Err(e) => Err(e),
    };
    exit_code(result)
}

/// `leadq tenant set-kind`: enables, shadows or disables a job kind for a tenant.
fn set_kind(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    slug: &str,
    kind: &str,
    mode: &str,
) -> ExitCode {
    if !kinds::is_known(kind) {
        eprintln!(
            "invalid_request: unknown kind {kind:?} (known: {:?})",
            kinds::names()
        );
        return ExitCode::from(2);
    }
    exit_code(runtime.block_on(async {
        let pool = db::connect(settings.database_url(), 2).await?;
        let actor = format!("operator:{operator}");
        let id = tenant::set_kind_mode(&pool, &actor, slug, kind, mode).await?;
        println!(
            "{}",
            serde_json::json!({"tenant_id": id, "kind": kind, "mode": mode})
        );
        Ok(())
    }))
}

/// `leadq tenant update`: a tenant's integrations and scoring.
fn update(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    args: &TenantUpdateArgs,
) -> ExitCode {
    let update = match tenant_update(args) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("invalid_request: {e:#}");
            return ExitCode::from(2);
        }
    };
    let res = runtime.block_on(async {
        let pool = db::connect(settings.database_url(), 2).await?;
        let sealer = leadq_jobs::pii::Sealer::from_settings(settings);
        Ok::<_, anyhow::Error>(
            settings::update(
                &pool,
                &sealer,
                &args.slug,
                &update,
                &format!("operator:{operator}"),
            )
            .await,
        )
    });
    let result = match res {
        Ok(Ok(changed)) => {
            println!(
                "{}",
                serde_json::json!({"tenant": args.slug, "changed": changed})
            );
            Ok(())
        }
        Ok(Err(
            e @ (settings::IntegrationError::Invalid(_)
            | settings::IntegrationError::UnknownTenant(_)),
        )) => {
            eprintln!("invalid_request: {e}");
            return ExitCode::from(2);
        }
        Ok(Err(e)) => Err(anyhow::Error::new(e)).context("Failed to update the tenant"),
        Err(e) => Err(e),
    };
    exit_code(result)
}

/// Enqueues an update_billing_limit job for the tenant `slug`.
async fn set_limits(
    settings: &Settings,
    operator: &str,
    slug: &str,
    limits: leadq_jobs::ops::limits::Limits,
) -> anyhow::Result<()> {
    use leadq_queue::envelope::Envelope;
    let pool = db::connect(settings.database_url(), 2).await?;
    let tenant_id: uuid::Uuid = sqlx::query_scalar("select id from tenants where slug = $1")
        .bind(slug)
        .fetch_optional(&pool)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant with slug {slug:?}"))?;
    // The worker refuses a billing change of an operator that is not registered, enabled and
    // holding `limits` (dead-lettered `unauthorized`); say so here, before enqueueing.
    use leadq_platform::operators::{self, permission};
    match operators::find(&pool, operator).await? {
        None => anyhow::bail!(
            "operator {operator:?} is not registered: set LEADQ_OPERATOR (or --operator) to your \
             operator name, or register it with `leadq operator add {operator} --permissions limits`"
        ),
        Some(op) if op.disabled => anyhow::bail!("operator {operator:?} is disabled"),
        Some(op) if !op.permissions.iter().any(|p| p == permission::LIMITS) => anyhow::bail!(
            "operator {operator:?} lacks the `limits` permission billing changes need"
        ),
        Some(_) => {}
    }
    let signer = leadq_queue::signing::Signer::new(settings.signing_keys().clone());
    let queue =
        leadq_queue::Queue::connect(settings.redis_url(), settings.queue.clone(), signer).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let done = queue
        .enqueue_now(
            Envelope::new(
                tenant_id,
                format!("operator:{operator}"),
                kinds::UPDATE_BILLING_LIMIT,
                serde_json::to_value(limits)?,
            )
            .message_id(format!("billing-{id}"))
            .correlation_id(id),
        )
        .await?;
    println!("{}", serde_json::json!({"job_id": done.job_id}));
    Ok(())
}
