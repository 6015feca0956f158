//! `leadq shadow rules|clear|report`: candidate scoring rules run beside a tenant's live ones,
//! and the comparison of the two (`leadq_jobs::lead::shadow`). Changes are audited.

use std::process::ExitCode;

use anyhow::Context as _;
use leadq_jobs::kinds;
use leadq_jobs::lead::shadow::{self, CandidateUpdate, ShadowError};
use leadq_platform::config::Settings;
use leadq_platform::db;
use tokio::runtime::Runtime;

use super::exit_code;

/// `leadq shadow` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(super) enum ShadowCommand {
    /// Give a tenant candidate scoring rules: its live rules with these changes. Every lead it
    /// scores from now on is scored both ways and compared. Prints {tenant, rules}.
    Rules {
        /// Tenant slug.
        slug: String,
        /// A weight, RULE=POINTS (budget, timeline, company_size, need, contact, engagement);
        /// repeatable.
        #[arg(long = "weight", value_parser = super::tenant::parse_weight)]
        weights: Vec<(String, u8)>,
        /// Score at or above which a lead is hot.
        #[arg(long)]
        hot_threshold: Option<u8>,
        /// Score at or above which a lead is warm.
        #[arg(long)]
        warm_threshold: Option<u8>,
    },
    /// Remove a tenant's candidate rules (comparisons stop; recorded ones stay).
    Clear {
        /// Tenant slug.
        slug: String,
    },
    /// Summarise a tenant's comparisons of one kind: agreements, tier moves, mean score change.
    /// Prints one JSON object; exit 0.
    Report {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// Job kind (lead_score or chatwoot_event).
        #[arg(long, default_value = kinds::LEAD_SCORE)]
        kind: String,
        /// Only comparisons of the last this many hours (at most ten years').
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=87_600))]
        hours: u32,
    },
}

/// Runs a `leadq shadow` subcommand.
pub(super) fn run(
    runtime: &Runtime,
    settings: &Settings,
    operator: &str,
    command: ShadowCommand,
) -> ExitCode {
    let actor = format!("operator:{operator}");
    let result = runtime.block_on(async {
        let pool = db::connect(settings.database_url(), 2).await?;
        let out = match command {
            ShadowCommand::Rules {
                slug,
                weights,
                hot_threshold,
                warm_threshold,
            } => {
                let update = CandidateUpdate {
                    weights: weights.into_iter().collect(),
                    hot_threshold,
                    warm_threshold,
                };
                shadow::set_candidate(&pool, &slug, &actor, &update)
                    .await
                    .map(|rules| serde_json::json!({"tenant": slug, "rules": rules}))
            }
            ShadowCommand::Clear { slug } => shadow::clear_candidate(&pool, &slug, &actor)
                .await
                .map(|cleared| serde_json::json!({"tenant": slug, "cleared": cleared})),
            ShadowCommand::Report {
                tenant,
                kind,
                hours,
            } => {
                let since = chrono::Utc::now() - chrono::Duration::hours(i64::from(hours));
                shadow::report(&pool, &tenant, &kind, since)
                    .await
                    .map(|r| serde_json::json!(r))
            }
        };
        Ok::<_, anyhow::Error>(out)
    });
    match result {
        Ok(Ok(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(Err(e @ (ShadowError::Invalid(_) | ShadowError::UnknownTenant(_)))) => {
            eprintln!("invalid_request: {e}");
            ExitCode::from(2)
        }
        Ok(Err(e)) => exit_code(Err(anyhow::Error::new(e)).context("shadow command failed")),
        Err(e) => exit_code(Err(e)),
    }
}
