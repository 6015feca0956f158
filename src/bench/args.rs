//! `leadq bench`'s command line: the protocol's flags (`docs/bench-protocol.md`) and ours.
//!
//! Kept apart from the modes so the flags, their defaults and their help read in one place;
//! every other file of the bench reads [`BenchArgs`] and never parses anything.

use clap::{Args, ValueEnum};
use serde::Serialize;

/// Drain or steady.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Enqueue N jobs, then drain them with one worker.
    Drain,
    /// One worker; a producer child enqueues R jobs/s for T seconds, one call per job.
    Steady,
    /// Fairness: tenant A enqueues N jobs at once, then tenant B enqueues R jobs/s for T
    /// seconds while A's backlog drains; reports B's latency (`b_lat_ms`) and A's backlog
    /// left when B's last job was enqueued.
    Fair,
    /// The real lead path: leads (or signed Chatwoot messages, `--source chatwoot`) posted
    /// over HTTP by C clients for T tenants to a running API, run by the real worker into
    /// PostgreSQL (see `e2e.rs`).
    E2e,
}

/// What `--mode e2e` posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `POST /v1/leads` with a tenant key → `lead_score`.
    Lead,
    /// Signed Chatwoot `message_created` webhooks → `chatwoot_event`.
    Chatwoot,
}

/// Who sends the jobs that arrive during `--mode fair`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Arrivals {
    /// Tenant B sends them all: one tenant's share against a burst.
    One,
    /// Each comes from a tenant never seen before: a new tenant's first job.
    New,
}

/// Drain phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Both phases in one process.
    All,
    /// Enqueue N jobs and exit.
    Enqueue,
    /// Drain N jobs and exit.
    Work,
}

/// How the `sleepNms` handler waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SleepTimer {
    /// `tokio::time::sleep`: 1 ms ticks, rounded up (like Node's `setTimeout`).
    Tokio,
    /// A Linux timer fd awaited in tokio's reactor (see `timer.rs`): the handler takes the N
    /// ms the protocol's C/d bound assumes, plus the machine's wake-up latency (under 0.1 ms
    /// here), so the figure measures the queue, not the timer.
    Precise,
}

/// Which tokio runtime the bench process runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchRuntime {
    /// One worker thread per core, as `leadq worker` runs: the queue's own work (fetch,
    /// decode, settle) spreads over the cores.
    MultiThread,
    /// Everything on the bench's one thread, like Node's event loop: no cross-thread wake-up
    /// between a timer, a Redis reply and the handler it resumes.
    CurrentThread,
}

/// Process role (internal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The benchmark proper.
    Bench,
    /// The steady-mode producer child.
    Producer,
}

/// The protocol's command line.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Redis host.
    #[arg(long, default_value = "127.0.0.1")]
    pub(super) host: String,
    /// Redis port.
    #[arg(long, default_value_t = 6399)]
    pub(super) port: u16,
    /// drain or steady.
    #[arg(long, value_enum, default_value = "drain")]
    pub(super) mode: Mode,
    /// Drain only: all, enqueue, work.
    #[arg(long, value_enum, default_value = "all")]
    pub(super) phase: Phase,
    /// Drain: number of jobs.
    #[arg(long, default_value_t = 20_000)]
    pub(super) n: usize,
    /// Worker concurrency.
    #[arg(long, default_value_t = 50)]
    pub(super) c: usize,
    /// Handler: 0 = no-op, else an async sleep of this many ms.
    #[arg(long = "sleep-ms", default_value_t = 0)]
    pub(super) sleep_ms: u64,
    /// Handler: how the sleep waits (`tokio` like-for-like with `setTimeout`, or `precise`).
    #[arg(long = "sleep-timer", value_enum, default_value = "tokio")]
    pub(super) sleep_timer: SleepTimer,
    /// The tokio runtime: `multi-thread` (as `leadq worker`) or `current-thread` (one thread).
    #[arg(long, value_enum, default_value = "multi-thread")]
    pub(super) runtime: BenchRuntime,
    /// Drain enqueue chunk.
    #[arg(long, default_value_t = 1000)]
    pub(super) chunk: usize,
    /// Steady: jobs per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(super) rate: f64,
    /// Steady: seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(super) duration: f64,
    /// Payload size (compact JSON bytes).
    #[arg(long = "payload-bytes", default_value_t = 300)]
    pub(super) payload_bytes: usize,
    /// Queue name (our key prefix).
    #[arg(long, default_value = "bench")]
    pub(super) queue: String,
    /// Give up waiting after this many seconds (steady, fair: after the sending schedule).
    #[arg(long = "timeout-s", default_value_t = 300)]
    pub(super) timeout_s: u64,
    /// Max outstanding enqueue calls (steady producer).
    #[arg(long = "max-inflight", default_value_t = 64)]
    pub(super) max_inflight: usize,
    /// Drain: B extra ready jobs enqueued behind the N measured ones (same kind and tenant,
    /// so they sit in the ready set during the whole work phase); the worker stops after the
    /// N measured completions and the B stay. Per-job figures are the measured jobs'.
    #[arg(long, default_value_t = 0)]
    pub(super) backlog: usize,
    /// Steady: sample Redis `used_memory` every S seconds (0 = off; default 10 when the
    /// duration is at least 60 s, else off).
    #[arg(long = "mem-sample-s")]
    pub(super) mem_sample_s: Option<f64>,
    /// Completed job ids kept (count cap of the `done` set); default `LEADQ_KEEP_DONE`, as in
    /// production.
    #[arg(long = "keep-done")]
    pub(super) keep_done: Option<u64>,
    /// Completed job ids older than this many seconds are trimmed; default
    /// `LEADQ_KEEP_DONE_SECS`, as in production.
    #[arg(long = "keep-done-secs")]
    pub(super) keep_done_secs: Option<u64>,
    /// How long a `message_id` is remembered for deduplication; default
    /// `LEADQ_DEDUPE_TTL_SECS`, as in production.
    #[arg(long = "dedupe-ttl-secs")]
    pub(super) dedupe_ttl_secs: Option<u64>,
    /// E2e: tenants the load is spread over (created by the bench, each with its own key).
    /// Fair: tenants in all, B included: the backlog is spread over the other T − 1 (at
    /// least one, tenant A).
    #[arg(long, default_value_t = 1)]
    pub(super) tenants: usize,
    /// Fair: who sends the jobs that arrive while the backlog drains.
    #[arg(long, value_enum, default_value = "one")]
    pub(super) arrivals: Arrivals,
    /// E2e: what is posted.
    #[arg(long, value_enum, default_value = "lead")]
    pub(super) source: Source,
    /// E2e (leads): after each lead it posts, a client reads this many leads back
    /// (`GET /v1/leads/{id}`, each an audited read of personal data), from a reader tenant
    /// whose 256 leads are stored before the timed run. With and without read auditing:
    /// docs/bench.md.
    #[arg(long = "reads-per-lead", default_value_t = 0)]
    pub(super) reads_per_lead: usize,
    /// E2e: post exactly this many (else post for `--duration` seconds).
    #[arg(long)]
    pub(super) leads: Option<usize>,
    /// E2e: the API to post to (`http://host:port`); without it the bench starts `leadq api`
    /// and `leadq worker` itself, with the environment's settings, and reports their memory.
    #[arg(long)]
    pub(super) api: Option<String>,
    /// Internal.
    #[arg(long, value_enum, default_value = "bench")]
    pub(super) role: Role,
}

impl BenchArgs {
    /// The runtime this run asked for (`--runtime`), built by the caller before `run`.
    pub fn runtime(&self) -> BenchRuntime {
        self.runtime
    }
}

/// The command line `argv` (after `bench`) as the binary would parse it.
#[cfg(test)]
pub(super) fn parse(argv: &[&str]) -> BenchArgs {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    Cli::parse_from(std::iter::once("bench").chain(argv.iter().copied())).bench
}
