//! Command-line interface. Results go to stdout, logs to stderr.
//!
//! Exit codes: 0 ok; 1 runtime failure; 2 invalid configuration or usage;
//! 3 `tenant create` of a slug that exists (stderr starts with `tenant_exists`).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::bench::BenchRuntime;
use anyhow::Context;
use clap::{Parser, Subcommand};
use leadq_jobs::integrations::{self, TenantUpdate};
use leadq_jobs::kinds;
use leadq_platform::config::{LogFormat, Needs, Settings};
use leadq_platform::secret::Secret;
use leadq_platform::shutdown::shutdown_signal;
use leadq_platform::{db, keys, telemetry, tenant};

/// leadq: multi-tenant job-queue platform for lead qualification, CRM sync and chat events.
#[derive(Debug, Parser)]
#[command(name = "leadq", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API on LEADQ_API_ADDR.
    Api,
    /// Run the workers of every job kind; health and metrics on LEADQ_WORKER_ADDR.
    Worker,
    /// Apply pending database migrations.
    Migrate,
    /// Tenant administration.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
        /// Who is acting, recorded as `operator:<name>` (set-limits).
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// API-key administration (operator actions, audited).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Lead administration.
    Lead {
        #[command(subcommand)]
        command: LeadCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Dead-letter operations (operator actions, audited).
    Dlq {
        #[command(subcommand)]
        command: crate::dlq_cli::DlqCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Per-tenant queue controls: pause, resume, concurrency cap, share (audited).
    Queue {
        #[command(subcommand)]
        command: crate::queue_cli::QueueCommand,
        /// Who is acting, recorded in the audit trail as `operator:<name>`.
        #[arg(long, env = "LEADQ_OPERATOR", default_value = "cli", global = true)]
        operator: String,
    },
    /// Audit-trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Queue benchmark (shared/bench-protocol.md); prints one JSON line.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
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
        /// Lifetime of the new key, e.g. 90d.
        #[arg(long)]
        expires_in: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum LeadCommand {
    /// Right to be forgotten: delete a lead's personal data from PostgreSQL and from queued
    /// jobs; prints {lead_deleted, jobs_removed, jobs_running}.
    Erase {
        /// Tenant slug.
        tenant: String,
        /// The lead's external id.
        external_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chains; print one JSON line per chain; exit 1 if any is broken.
    Verify {
        /// Only this tenant's chain (default: every tenant and the platform chain).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
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
struct TenantUpdateArgs {
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

fn parse_weight(s: &str) -> Result<(String, u8), String> {
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
    use leadq_jobs::integrations::{CrmAuth, CrmSettings};
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

impl Command {
    /// The settings a command needs; `None` for commands that read none.
    fn needs(&self) -> Option<Needs> {
        match self {
            Command::Bench(_) => None,
            Command::Api
            | Command::Worker
            | Command::Lead { .. }
            | Command::Dlq { .. }
            | Command::Queue { .. }
            | Command::Tenant {
                command: TenantCommand::SetLimits { .. },
                ..
            } => Some(Needs {
                database: true,
                redis: true,
                keys: true,
            }),
            Command::Tenant {
                command: TenantCommand::Update(_),
                ..
            } => Some(Needs {
                database: true,
                redis: false,
                keys: true,
            }),
            Command::Migrate
            | Command::Tenant { .. }
            | Command::Audit { .. }
            | Command::Key { .. } => Some(Needs {
                database: true,
                redis: false,
                keys: false,
            }),
        }
    }
}

/// Enqueues an update_billing_limit job for the tenant `slug`.
async fn set_limits(
    settings: &Settings,
    operator: &str,
    slug: &str,
    limits: leadq_jobs::limits::Limits,
) -> anyhow::Result<()> {
    use leadq_queue::envelope::{Envelope, SCHEMA_VERSION};
    let pool = db::connect(settings.database_url(), 2).await?;
    let tenant_id: uuid::Uuid = sqlx::query_scalar("select id from tenants where slug = $1")
        .bind(slug)
        .fetch_optional(&pool)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant with slug {slug:?}"))?;
    let signer = leadq_queue::signing::Signer::new(settings.signing_keys().clone());
    let queue =
        leadq_queue::Queue::connect(settings.redis_url(), settings.queue.clone(), signer).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let done = queue
        .enqueue_now(Envelope {
            schema_version: SCHEMA_VERSION,
            message_id: format!("billing-{id}"),
            tenant_id,
            user_id: format!("operator:{operator}"),
            action: kinds::UPDATE_BILLING_LIMIT.into(),
            payload: serde_json::to_value(limits)?,
            timestamp: chrono::Utc::now(),
            correlation_id: id,
            signature: None,
        })
        .await?;
    println!("{}", serde_json::json!({"job_id": done.job_id}));
    Ok(())
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

/// Verifies the audit chains; prints one JSON line per chain. `Ok(false)`: a chain is broken.
async fn audit_verify(settings: &Settings, slug: Option<&str>) -> anyhow::Result<bool> {
    use leadq_platform::audit::verify_chain;
    use leadq_platform::db::Scope;
    let pool = db::connect(settings.database_url(), 2).await?;
    let tenants: Vec<(uuid::Uuid, String)> = match slug {
        Some(s) => {
            sqlx::query_as("select id, slug from tenants where slug = $1")
                .bind(s)
                .fetch_all(&pool)
                .await?
        }
        None => {
            sqlx::query_as("select id, slug from tenants order by slug")
                .fetch_all(&pool)
                .await?
        }
    };
    if let (Some(s), true) = (slug, tenants.is_empty()) {
        anyhow::bail!("no tenant with slug {s:?}");
    }
    let mut scopes: Vec<Scope> = tenants.iter().map(|(id, _)| Scope::Tenant(*id)).collect();
    if slug.is_none() {
        scopes.push(Scope::Platform);
    }
    let mut all_ok = true;
    for scope in scopes {
        let report = verify_chain(&pool, scope).await?;
        all_ok &= report.first_broken_id.is_none();
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(all_ok)
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.command.needs() {
        None => None,
        Some(needs) => match Settings::from_env(needs, kinds::CATALOGUE) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("leadq: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let mut builder = match &cli.command {
        Command::Bench(args) if args.runtime() == BenchRuntime::CurrentThread => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match (cli.command, settings) {
        (Command::Bench(args), _) => {
            telemetry::init_logs("warn", LogFormat::Json);
            runtime.block_on(crate::bench::run(args))
        }
        (Command::Api, Some(settings)) => {
            let _guard = telemetry::init(&settings);
            runtime.block_on(async {
                let app = leadq_api::Application::build(&settings).await?;
                app.run_until_stopped(shutdown_signal()).await
            })
        }
        (Command::Worker, Some(settings)) => {
            let _guard = telemetry::init(&settings);
            runtime.block_on(async {
                let worker = leadq_worker::Worker::build(settings).await?;
                worker.run_until_stopped(shutdown_signal()).await
            })
        }
        (Command::Migrate, Some(settings)) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            runtime.block_on(async {
                let pool = db::connect(settings.database_url(), 2).await?;
                db::migrate(&pool).await?;
                tracing::info!("Migrations applied.");
                Ok(())
            })
        }
        (
            Command::Tenant {
                command: TenantCommand::Create { slug },
                ..
            },
            Some(settings),
        ) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            let res = runtime.block_on(async {
                let pool = db::connect(settings.database_url(), 2).await?;
                Ok::<_, anyhow::Error>(tenant::create(&pool, &slug, "cli").await)
            });
            match res {
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
            }
        }
        (
            Command::Audit {
                command: AuditCommand::Verify { tenant },
            },
            Some(settings),
        ) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            match runtime.block_on(audit_verify(&settings, tenant.as_deref())) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            }
        }
        (
            Command::Lead {
                command:
                    LeadCommand::Erase {
                        tenant,
                        external_id,
                    },
                operator,
            },
            Some(settings),
        ) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            runtime.block_on(async {
                let pool = db::connect(settings.database_url(), 2).await?;
                let tenant_id: uuid::Uuid =
                    sqlx::query_scalar("select id from tenants where slug = $1")
                        .bind(&tenant)
                        .fetch_optional(&pool)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("no tenant with slug {tenant:?}"))?;
                let signer = leadq_queue::signing::Signer::new(settings.signing_keys().clone());
                let queue = leadq_queue::Queue::connect(
                    settings.redis_url(),
                    settings.queue.clone(),
                    signer,
                )
                .await?;
                let erased = leadq_jobs::lead_score::erase(
                    &pool,
                    &queue,
                    tenant_id,
                    &external_id,
                    &format!("operator:{operator}"),
                    "cli",
                )
                .await?;
                println!("{}", serde_json::to_string(&erased)?);
                Ok(())
            })
        }
        (
            Command::Tenant {
                command: TenantCommand::SetKind { slug, kind, mode },
                operator,
            },
            Some(settings),
        ) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            if !kinds::is_known(&kind) {
                eprintln!(
                    "invalid_request: unknown kind {kind:?} (known: {:?})",
                    kinds::names()
                );
                return ExitCode::from(2);
            }
            runtime.block_on(async {
                let pool = db::connect(settings.database_url(), 2).await?;
                let actor = format!("operator:{operator}");
                let id = tenant::set_kind_mode(&pool, &actor, &slug, &kind, &mode).await?;
                println!(
                    "{}",
                    serde_json::json!({"tenant_id": id, "kind": kind, "mode": mode})
                );
                Ok(())
            })
        }
        (
            Command::Tenant {
                command:
                    TenantCommand::SetLimits {
                        slug,
                        per_second,
                        burst,
                        leads_per_day,
                    },
                operator,
            },
            Some(settings),
        ) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            let limits = leadq_jobs::limits::Limits {
                ingest_per_second: per_second,
                ingest_burst: burst,
                leads_per_day,
            };
            if let Err(why) = limits.validate() {
                eprintln!("invalid_request: {why}");
                return ExitCode::from(2);
            }
            runtime.block_on(set_limits(&settings, &operator, &slug, limits))
        }
        (
            Command::Tenant {
                command: TenantCommand::Update(args),
                operator,
            },
            Some(settings),
        ) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            let update = match tenant_update(&args) {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("invalid_request: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let res = runtime.block_on(async {
                let pool = db::connect(settings.database_url(), 2).await?;
                let sealer = leadq_jobs::pii::Sealer::new(settings.data_keys().clone());
                Ok::<_, anyhow::Error>(
                    integrations::update(
                        &pool,
                        &sealer,
                        &args.slug,
                        &update,
                        &format!("operator:{operator}"),
                    )
                    .await,
                )
            });
            match res {
                Ok(Ok(changed)) => {
                    println!(
                        "{}",
                        serde_json::json!({"tenant": args.slug, "changed": changed})
                    );
                    Ok(())
                }
                Ok(Err(
                    e @ (integrations::IntegrationError::Invalid(_)
                    | integrations::IntegrationError::UnknownTenant(_)),
                )) => {
                    eprintln!("invalid_request: {e}");
                    return ExitCode::from(2);
                }
                Ok(Err(e)) => Err(anyhow::Error::new(e)).context("Failed to update the tenant"),
                Err(e) => Err(e),
            }
        }
        (Command::Dlq { command, operator }, Some(settings)) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            let res = runtime.block_on(crate::dlq_cli::run(&settings, &operator, command));
            match invalid_request(res) {
                Ok(r) => r,
                Err(code) => return code,
            }
        }
        (Command::Queue { command, operator }, Some(settings)) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            let res = runtime.block_on(crate::queue_cli::run(&settings, &operator, command));
            match invalid_request(res) {
                Ok(r) => r,
                Err(code) => return code,
            }
        }
        (Command::Key { command, operator }, Some(settings)) => {
            telemetry::init_logs(&settings.log_filter, settings.log_format);
            match runtime.block_on(key_command(&settings, &operator, command)) {
                Ok(()) => Ok(()),
                Err(e)
                    if e.downcast_ref::<keys::KeyError>()
                        .is_some_and(|k| !matches!(k, keys::KeyError::Db(_))) =>
                {
                    eprintln!("invalid_request: {e}");
                    return ExitCode::from(2);
                }
                Err(e) => Err(e),
            }
        }
        (_, None) => Err(anyhow::anyhow!("settings were not loaded for this command")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "leadq failed.");
            eprintln!("leadq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An operator command refused for its input exits 2 with `invalid_request: …`; other results
/// are passed on.
fn invalid_request(res: anyhow::Result<()>) -> Result<anyhow::Result<()>, ExitCode> {
    use leadq_jobs::deadletters::OpsError;
    match res {
        Err(e) if matches!(e.downcast_ref::<OpsError>(), Some(OpsError::Invalid(_))) => {
            eprintln!("invalid_request: {e}");
            Err(ExitCode::from(2))
        }
        other => Ok(other),
    }
}
