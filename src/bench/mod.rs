//! `leadq bench`: the queue benchmark of `docs/bench-protocol.md`.
//!
//! It runs the real stack (our Redis backend under an apalis worker with the production
//! layers) against the given Redis, so its figures compare with BullMQ's on the same server.
//! Latency is `t_done - t_enq`, where `t_done` is read after the job's acknowledgement has
//! returned from Redis (the observer is called after settling), and `t_enq` travels in the
//! payload. Exactly one JSON line goes to stdout.
//!
//! Beyond the protocol's fields it reads Redis itself (on a connection of its own, whose
//! commands it subtracts): `redis` holds the harness's per-job costs (`INFO commandstats` calls
//! per job, Lua included; Redis main-thread CPU per job; …) per phase; the `mem_*` fields give
//! Redis memory per queued job, per retained completed job and, in steady mode, over time;
//! `--backlog B` leaves B ready jobs behind the N measured ones, to show the cost per job does
//! not grow with the backlog. See `docs/bench.md`.
//!
//! # Layout
//! - `args`: [`BenchArgs`], the command line.
//! - `harness`: the bench queue (production's settings), its jobs, bulk enqueueing.
//! - `worker`: one worker as `leadq worker` runs it, and the tally of its completions.
//! - `cost`: the Redis cost per job and the memory held, from `leadq_queue::probe` readings.
//! - one file per mode: `drain`, `steady` (with its producer child), `fair`; and `e2e`, the
//!   real lead path over HTTP (the one mode that measures the job catalogue and PostgreSQL
//!   too, so the one that depends on `leadq-jobs`).
//! - `timer`: the precise sleep of `--sleep-timer precise`.
//!
//! This module keeps the dispatch ([`run`]), the fields every JSON line starts with, and the
//! small helpers (clock, rounding) the others share. The bench depends on `leadq-queue`, never
//! on `leadq-jobs` (but `e2e`): it measures the engine, not the job catalogue.

use std::time::{SystemTime, UNIX_EPOCH};

use leadq_platform::secret::Secret;
use serde_json::json;

mod args;
mod cost;
mod cpu;
mod drain;
mod e2e;
mod fair;
mod harness;
mod steady;
mod timer;
mod worker;

pub use args::{BenchArgs, BenchRuntime, Mode, Phase, Role, SleepTimer, Source};

/// The bench's job kind (and the queue key's kind: `{<queue>:bench}`).
const KIND: &str = "bench";

/// Unix epoch milliseconds, sub-ms resolution, from the wall clock.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Rounded to 3 decimals (the harness's precision).
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Rounded to `digits` decimals.
fn round_to(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// The Redis under test, from `--host` and `--port`.
fn redis_url(a: &BenchArgs) -> Secret {
    Secret::new(format!("redis://{}:{}/", a.host, a.port))
}

/// The handler's name in the JSON line: `noop`, `sleep<N>ms` or `sleep<N>ms-precise`.
fn handler_name(a: &BenchArgs) -> String {
    if a.sleep_ms > 0 && a.sleep_timer == SleepTimer::Precise {
        format!("sleep{}ms-precise", a.sleep_ms)
    } else if a.sleep_ms > 0 {
        format!("sleep{}ms", a.sleep_ms)
    } else {
        "noop".into()
    }
}

/// The fields every JSON line starts with: who ran, on what, with which handler.
fn base(a: &BenchArgs) -> serde_json::Value {
    json!({
        "peer": "leadq",
        "peer_version": env!("CARGO_PKG_VERSION"),
        "client": "redis-rs 1.8",
        "runtime": match a.runtime {
            BenchRuntime::MultiThread => "rust tokio multi-thread apalis-core 1.0",
            BenchRuntime::CurrentThread => "rust tokio current-thread apalis-core 1.0",
        },
        "mode": a.mode,
        "handler": handler_name(a),
        "c": a.c,
        "payload_bytes": a.payload_bytes,
    })
}

/// Runs the benchmark and prints its JSON line.
pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.role == Role::Producer {
        let p = steady::produce(&a).await?;
        println!("{}", serde_json::to_string(&p)?);
        return Ok(());
    }
    let mut out = base(&a);
    match a.mode {
        Mode::Drain => drain::run(&a, &mut out).await?,
        Mode::Steady => steady::run(&a, &mut out).await?,
        Mode::Fair => fair::run(&a, &mut out).await?,
        Mode::E2e => e2e::run(&a, &mut out).await?,
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
