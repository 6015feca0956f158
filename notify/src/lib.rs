//! Error alerts to Telegram.
//!
//! # Why
//!
//! Operators want to hear about a failure from the platform, not from a tenant, and without
//! a flood: when a hundred workers hit the same bug, the chat gets one message and a count.
//! And an alert chat is read by more people than the database: nothing secret may reach it.
//!
//! # What is sent
//!
//! - ERROR-level events of `leadq api` and `leadq worker` ([`AlertLayer`]), except those
//!   marked `alerted = true` (alerted by their own path) and this crate's own;
//! - panics ([`layer::install_panic_hook`]), critical;
//! - dead-lettered jobs ([`Alert::dead_letter`], from the worker's observer): kind, reason,
//!   tenant slug, job id, correlation id, **never the payload**; critical when the reason is
//!   a security one (`bad_signature`, `unauthorized`).
//!
//! An error whose code says a dependency is down (`queue_unavailable`,
//! `database_unavailable`) is critical too; everything else is not.
//!
//! # Guarantees
//!
//! - **Nothing secret leaves**: title, every field and every cause line pass through the
//!   process's scrubber (`leadq_platform::scrub`: built-in rules plus `LEADQ_SCRUB_PATTERNS`)
//!   before anything else looks at them; the cause chain is cut to
//!   `LEADQ_ALERT_MAX_TRACE_LINES`.
//! - **No flood, across every process**: the decision is taken in Redis
//!   (`leadq_queue::alert_state`) by fingerprint (error kind + code location or message
//!   template, not the varying values; see [`fingerprint`]): a critical alert goes out at
//!   once, then its fingerprint is quiet for `LEADQ_ALERT_RATE_LIMIT_MINUTES` and its repeats
//!   are counted; non-critical alerts and those repeats go into one digest per
//!   `LEADQ_ALERT_BATCH_WINDOW_MINUTES`, one line per fingerprint with its count. All of it
//!   expires after `LEADQ_ALERT_STATE_TTL_HOURS`.
//! - **Never in the way**: [`Notifier::report`] never blocks and never fails; alerts go
//!   through a bounded channel, and what does not fit is dropped and counted.
//! - **Telegram's rules**: see [`sender`] (HTML, 4,096 characters, 1 message/s, 20/min,
//!   `retry_after`, migrated chats, a blocked bot).
//! - Every message names the environment (`LEADQ_ENVIRONMENT`) and the process.
//! - Off unless `LEADQ_ALERT_TELEGRAM_BOT_TOKEN` and `LEADQ_ALERT_TELEGRAM_CHAT_ID` are set.
//!
//! Every step is counted in `leadq_error_alerts_total{outcome}`; a blocked bot raises
//! `leadq_error_alerts_blocked`.
//!
//! # Layout
//! - `lib.rs`: [`Config`], [`Notifier`] (report, counts), [`spawn`], [`start`] (process
//!   start-up) and the process-wide notifier ([`global`], [`report`]).
//! - [`alert`]: [`Alert`], [`Severity`], dead letters.
//! - [`fingerprint`]: which alerts are the same error.
//! - [`render`]: HTML escaping, the message layouts, the 4,096-character cap.
//! - [`policy`]: ignored paths and errors, scrubbing, the Redis decision, the digest.
//! - [`sender`]: the Telegram client.
//! - [`layer`]: the `tracing` layer and the panic hook.

pub mod alert;
pub mod fingerprint;
pub mod layer;
pub mod policy;
pub mod render;
pub mod sender;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use leadq_platform::config::{AlertChannelSettings, Settings};
use leadq_platform::metrics as m;
use leadq_platform::scrub::Scrubber;
use leadq_queue::alert_state::AlertState;
use tokio::sync::mpsc;

pub use alert::{Alert, DeadLetter, Severity};
pub use layer::AlertLayer;

/// Alerts waiting for the policy task; beyond this they are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 256;
/// Messages waiting for Telegram; beyond this they are dropped (and counted).
pub const OUTBOX_CAPACITY: usize = 64;

/// Everything the alert tasks of one process need.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bot, chat, and policy knobs.
    pub channel: AlertChannelSettings,
    /// `LEADQ_ENVIRONMENT`, named in every message.
    pub environment: String,
    /// `leadq-api` or `leadq-worker`, named in every message.
    pub process: String,
    /// The process's scrubber (built-in rules plus `LEADQ_SCRUB_PATTERNS`).
    pub scrubber: Scrubber,
    /// Least time between two messages of this process (Telegram: 1 per second per chat).
    pub min_interval: Duration,
    /// Most messages per minute from this process (Telegram: 20 per minute to a group).
    pub per_minute: usize,
}

impl Config {
    /// The configuration of `process` from the process settings; `None` when alerts are off.
    pub fn from_settings(settings: &Settings, process: &str) -> Option<Self> {
        let channel = settings.alert_channel.clone()?;
        Some(Self {
            channel,
            environment: settings.environment.clone(),
            process: process.to_owned(),
            scrubber: Scrubber::new(&settings.scrub_patterns).unwrap_or_default(),
            min_interval: Duration::from_secs(1),
            per_minute: 20,
        })
    }
}

/// Counts by outcome, kept next to the metrics (which are process-wide) so that each
/// [`Notifier`] can be asked about its own.
#[derive(Debug, Default)]
pub struct Stats {
    counts: [AtomicU64; 7],
    pub(crate) blocked: AtomicBool,
}

impl Stats {
    pub(crate) fn count(&self, outcome: &'static str) {
        metrics::counter!(m::ERROR_ALERTS_TOTAL, m::label::OUTCOME => outcome).increment(1);
        if let Some(i) = m::alert_outcome::ALL.iter().position(|o| *o == outcome) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The handle that reports alerts. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Alert>,
    stats: Arc<Stats>,
}

impl Notifier {
    /// Hands `alert` to the alert tasks, or drops it (counted `dropped`) when their queue is
    /// full or gone. Never blocks, never fails.
    pub fn report(&self, alert: Alert) {
        if self.tx.try_send(alert).is_err() {
            self.stats.count(m::alert_outcome::DROPPED);
        }
    }

    /// This notifier's counts, by outcome (every outcome present).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        m::alert_outcome::ALL
            .iter()
            .zip(&self.stats.counts)
            .map(|(o, c)| (*o, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Whether Telegram answered 403: nothing more is sent.
    pub fn is_blocked(&self) -> bool {
        self.stats.blocked.load(Ordering::Relaxed)
    }
}

/// Starts the alert tasks of `config` on the current Tokio runtime, with the shared state
/// `state`, and returns their handle. They stop when every clone of the handle is gone.
pub fn spawn(config: Config, state: AlertState) -> Notifier {
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let (out_tx, out_rx) = mpsc::channel(OUTBOX_CAPACITY);
    let telegram = sender::Telegram::new(
        &config.channel.api_url,
        config.channel.bot_token.clone(),
        &config.channel.chat_id,
        config.min_interval,
        config.per_minute,
        stats.clone(),
    );
    let pipeline = policy::Pipeline::new(Arc::new(config), state, out_tx, stats.clone());
    tokio::spawn(layer::IN_PIPELINE.scope((), pipeline.run(rx)));
    tokio::spawn(layer::IN_PIPELINE.scope((), telegram.run(out_rx)));
    Notifier { tx, stats }
}

static GLOBAL: OnceLock<Notifier> = OnceLock::new();

/// The process-wide notifier, once [`start`] installed one.
pub fn global() -> Option<&'static Notifier> {
    GLOBAL.get()
}

/// Reports to the process-wide notifier; does nothing while alerts are off.
pub fn report(alert: Alert) {
    if let Some(n) = global() {
        n.report(alert);
    }
}

/// The layer to give `telemetry::init` when alerts are configured (it reports to the
/// process-wide notifier once [`start`] ran; events before that are not alerted).
pub fn layer(settings: &Settings) -> Option<leadq_platform::telemetry::ExtraLayer> {
    settings
        .alert_channel
        .as_ref()
        .map(|_| Box::new(AlertLayer::global()) as leadq_platform::telemetry::ExtraLayer)
}

/// Process start-up: when alerts are configured, connects the shared state in Redis, starts
/// the alert tasks, makes them the process-wide notifier and installs the panic hook. `Ok(None)`
/// when alerts are off. Call once, inside the runtime, before the service starts.
pub async fn start(settings: &Settings, process: &str) -> anyhow::Result<Option<Notifier>> {
    let Some(config) = Config::from_settings(settings, process) else {
        return Ok(None);
    };
    let redis = settings
        .redis_url
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("error alerts need REDIS_URL"))?;
    let state = AlertState::connect(
        redis,
        &settings.queue.prefix,
        settings.queue.redis_cluster,
        &settings.queue.redis_tls,
    )
    .await
    .map_err(|e| anyhow::anyhow!("Failed to connect the error alerts' state in Redis: {e}"))?;
    m::register_alert_series();
    let max_trace_lines = config.channel.policy.max_trace_lines;
    let notifier = spawn(config, state);
    if GLOBAL.set(notifier.clone()).is_ok() {
        layer::install_panic_hook(max_trace_lines);
    }
    tracing::info!(process, "Error alerts to Telegram are on.");
    Ok(Some(notifier))
}
