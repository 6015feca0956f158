//! Command-line interface. Results go to stdout, logs to stderr.
//!
//! Exit codes: 0 ok; 1 runtime failure; 2 invalid configuration or usage;
//! 3 `tenant create` of a slug that exists (stderr starts with `tenant_exists`).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use leadq_jobs::kinds;
use leadq_platform::config::{LogFormat, Needs, Settings};
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

impl Command {
    /// The settings a command needs; `None` for commands that read none.
    fn needs(&self) -> Option<Needs> {
        match self {
            Command::Bench(_) => None,
            Command::Api
            | Command::Worker
            | Command::Lead { .. }
            | Command::Tenant {
                command: TenantCommand::SetLimits { .. },
                ..
            } => Some(Needs {
                database: true,
                redis: true,
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
    use leadq_jobs::envelope::{Envelope, SCHEMA_VERSION};
    let pool = db::connect(settings.database_url(), 2).await?;
    let tenant_id: uuid::Uuid = sqlx::query_scalar("select id from tenants where slug = $1")
        .bind(slug)
        .fetch_optional(&pool)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant with slug {slug:?}"))?;
    let signer = leadq_jobs::signing::Signer::new(settings.signing_keys().clone());
    let queue =
        leadq_jobs::queue::Queue::connect(settings.redis_url(), settings.queue.clone(), signer)
            .await?;
    let id = uuid::Uuid::now_v7().to_string();
    let done = queue
        .enqueue(vec![leadq_jobs::queue::NewJob {
            envelope: Envelope {
                schema_version: SCHEMA_VERSION,
                message_id: format!("billing-{id}"),
                tenant_id,
                user_id: format!("operator:{operator}"),
                action: kinds::UPDATE_BILLING_LIMIT.into(),
                payload: serde_json::to_value(limits)?,
                timestamp: chrono::Utc::now(),
                correlation_id: id,
                signature: None,
            },
            run_at: None,
        }])
        .await?;
    let job_id = done.first().map(|e| e.job_id);
    println!("{}", serde_json::json!({"job_id": job_id}));
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
                let signer = leadq_jobs::signing::Signer::new(settings.signing_keys().clone());
                let queue = leadq_jobs::queue::Queue::connect(
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
