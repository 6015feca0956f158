//! `leadq dlq list|show|redrive|purge`: dead-letter operations from a terminal.
//!
//! Results are JSON on stdout. Bulk actions show a progress bar with an ETA on stderr when it
//! is a terminal (and nothing otherwise, so scripts get clean output). Every call is audited
//! as `operator:<name>` (see [`leadq_jobs::ops::deadletters`]).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use chrono::Utc;
use clap::Subcommand;
use leadq_jobs::ops::deadletters::{self, Action, Actor, Selection};
use leadq_platform::config::Settings;
use leadq_platform::{db, keys, telemetry};
use leadq_queue::dlq::Filter;
use tokio::runtime::Runtime;
use uuid::Uuid;

use super::ops_exit_code;

/// Filter options shared by the subcommands.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct FilterArgs {
    /// Only this tenant's (slug).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this reason (max_attempts, unauthorized, poisoned, bad_signature, an error code…).
    #[arg(long)]
    reason: Option<String>,
    /// Only those dead for at least this long (e.g. 1h, 7d).
    #[arg(long)]
    older_than: Option<String>,
    /// Only those dead for at most this long.
    #[arg(long)]
    newer_than: Option<String>,
}

/// `leadq dlq …`.
#[derive(Debug, Subcommand)]
pub(super) enum DlqCommand {
    /// One page of a kind's dead letters, newest first, payloads scrubbed.
    List {
        /// Job kind.
        kind: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// Page size (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One dead letter.
    Show {
        /// Job kind.
        kind: String,
        /// Job id.
        job_id: Uuid,
    },
    /// Put dead letters back on the queue (same job, same message_id).
    Redrive {
        /// Job kind.
        kind: String,
        /// These jobs (repeatable), those of them the filter selects; without it, every dead
        /// letter matching the filter.
        #[arg(long = "id")]
        ids: Vec<Uuid>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete dead letters for good.
    Purge {
        /// Job kind.
        kind: String,
        /// These jobs (repeatable), those of them the filter selects; without it, every dead
        /// letter matching the filter.
        #[arg(long = "id")]
        ids: Vec<Uuid>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Confirms a purge without any filter.
        #[arg(long)]
        all: bool,
    },
}

async fn filter_of(pool: &sqlx::PgPool, f: &FilterArgs) -> anyhow::Result<Filter> {
    let age = |s: &Option<String>| -> anyhow::Result<Option<chrono::DateTime<Utc>>> {
        s.as_deref()
            .map(|v| {
                // A malformed age is the operator's input: exit 2, like any invalid filter.
                let d = keys::parse_duration(v)
                    .map_err(|e| deadletters::OpsError::Invalid(e.to_string()))?;
                Ok(Utc::now() - d)
            })
            .transpose()
    };
    Ok(Filter {
        tenant: match &f.tenant {
            Some(slug) => Some(deadletters::tenant_by_slug(pool, slug).await?),
            None => None,
        },
        reason: f.reason.clone(),
        dead_before: age(&f.older_than)?,
        dead_after: age(&f.newer_than)?,
    })
}

/// A progress bar with an ETA on stderr, redrawn in place.
fn progress_bar(label: &'static str) -> impl FnMut(usize, usize) + Send {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    move |done: usize, total: usize| {
        if !tty || total == 0 {
            return;
        }
        let frac = done as f64 / total as f64;
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let elapsed = started.elapsed().as_secs_f64();
        let eta = if done > 0 {
            elapsed / done as f64 * (total - done) as f64
        } else {
            0.0
        };
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{label} [{}{}] {done}/{total} ({:.0}%) ETA {eta:.0}s ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            frac * 100.0
        );
        if done >= total {
            let _ = writeln!(err);
        }
    }
}

/// What an operator command needs: the database (audit), the queue, and who acts under which
/// correlation id.
pub(super) struct OpsContext {
    pub(super) pool: sqlx::PgPool,
    pub(super) queue: leadq_queue::Queue,
    actor: String,
    correlation: String,
}

impl OpsContext {
    pub(super) async fn connect(settings: &Settings, operator: &str) -> anyhow::Result<Self> {
        let pool = db::connect(settings.database_url(), 2).await?;
        let signer = leadq_queue::signing::Signer::new(settings.signing_keys().clone());
        let queue =
            leadq_queue::Queue::connect(settings.redis_url(), settings.queue.clone(), signer)
                .await?;
        Ok(Self {
            pool,
            queue,
            actor: format!("operator:{operator}"),
            correlation: format!("cli-{}", Uuid::now_v7()),
        })
    }

    pub(super) fn who(&self) -> Actor<'_> {
        Actor {
            actor: &self.actor,
            correlation_id: &self.correlation,
        }
    }
}

/// Runs a `leadq dlq` command.
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    command: DlqCommand,
) -> ExitCode {
    telemetry::init_command_logs(settings);
    ops_exit_code(runtime.block_on(dlq(settings, operator, command)))
}

async fn dlq(settings: &Settings, operator: &str, cmd: DlqCommand) -> anyhow::Result<()> {
    let ctx = OpsContext::connect(settings, operator).await?;
    let (pool, queue, who) = (&ctx.pool, &ctx.queue, ctx.who());
    let out = match cmd {
        DlqCommand::List {
            kind,
            filter,
            limit,
            cursor,
        } => {
            let filter = filter_of(pool, &filter).await?;
            let page =
                deadletters::list(pool, queue, who, &kind, &filter, cursor.as_deref(), limit)
                    .await?;
            serde_json::to_string(&page)?
        }
        DlqCommand::Show { kind, job_id } => {
            match deadletters::show(pool, queue, who, &kind, job_id).await? {
                Some(d) => serde_json::to_string(&d)?,
                None => anyhow::bail!("no dead letter {job_id} of kind {kind}"),
            }
        }
        DlqCommand::Redrive { kind, ids, filter } => {
            let selection = selection(pool, ids, &filter, false).await?;
            let o = deadletters::act(
                pool,
                queue,
                who,
                &kind,
                Action::Redrive,
                &selection,
                &mut progress_bar("redrive"),
            )
            .await?;
            serde_json::to_string(&o)?
        }
        DlqCommand::Purge {
            kind,
            ids,
            filter,
            all,
        } => {
            let selection = selection(pool, ids, &filter, all).await?;
            let o = deadletters::act(
                pool,
                queue,
                who,
                &kind,
                Action::Purge,
                &selection,
                &mut progress_bar("purge"),
            )
            .await?;
            serde_json::to_string(&o)?
        }
    };
    println!("{out}");
    Ok(())
}

async fn selection(
    pool: &sqlx::PgPool,
    ids: Vec<Uuid>,
    filter: &FilterArgs,
    all: bool,
) -> anyhow::Result<Selection> {
    let filter = filter_of(pool, filter).await?;
    Ok(if ids.is_empty() {
        Selection::Matching { filter, all }
    } else {
        Selection::Ids {
            ids,
            within: filter,
        }
    })
}
