//! Steady mode: one worker, and a producer child process that enqueues `--rate` jobs/s for
//! `--duration` seconds, one call per job; optionally sampling Redis memory all along.
//!
//! The producer is a child process, the same binary with `--role producer`, as the protocol
//! prescribes (`docs/bench-protocol.md`): it prints a [`ProducerReport`] line that the parent
//! folds into its own.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use leadq_queue::probe::ServerProbe;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::cost::{self, cost, leftovers};
use super::harness::{connect, envelope, retention};
use super::worker::{run_worker, work_fields};
use super::{now_ms, r3, round_to, BenchArgs};

/// What the producer child prints as its one JSON line, for the parent to read.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ProducerReport {
    sent: usize,
    errors: usize,
    t_first: f64,
    t_last: f64,
    achieved_rate: Option<f64>,
    producer_max_lag_ms: f64,
}

/// The producer child (`--role producer`): sends on schedule, then reports.
pub(super) async fn produce(a: &BenchArgs) -> anyhow::Result<ProducerReport> {
    let queue = connect(a).await?;
    let total = (a.rate * a.duration).round() as usize;
    let run = uuid::Uuid::now_v7().to_string();
    let permits = Arc::new(tokio::sync::Semaphore::new(a.max_inflight.max(1)));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = now_ms();
    let (mut t_first, mut t_last, mut max_lag) = (0.0, 0.0, 0.0f64);
    for sent in 0..total {
        let due = t0 + sent as f64 * 1000.0 / a.rate;
        let wait = due - now_ms();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
        }
        let permit = permits.clone().acquire_owned().await?;
        let t = now_ms();
        max_lag = max_lag.max(t - due);
        if sent == 0 {
            t_first = t;
        }
        t_last = t;
        let q = queue.clone();
        let job = envelope(&run, sent as u64, t, a.payload_bytes);
        let errs = errors.clone();
        tasks.spawn(async move {
            if let Err(e) = q.enqueue(vec![job]).await {
                errs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!("leadq bench producer: {e}");
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let span = (t_last - t_first) / 1000.0;
    Ok(ProducerReport {
        sent: total,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        t_first,
        t_last,
        achieved_rate: (span > 0.0).then(|| ((total as f64 - 1.0) / span).round()),
        producer_max_lag_ms: r3(max_lag),
    })
}

/// Steady mode, with the Redis readings at its start and end.
pub(super) async fn run(a: &BenchArgs, out: &mut serde_json::Value) -> anyhow::Result<()> {
    out["retention"] = json!(retention(a)?);
    let probe = cost::probe(a).await?;
    let start = probe.info("everything").await?;
    let queue = connect(a).await?;
    let total = (a.rate * a.duration).round() as usize;
    out["rate"] = json!(a.rate);
    out["duration_s"] = json!(a.duration);
    let every = mem_sample_every(a);
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = every.map(|s| tokio::spawn(sample_memory(probe.clone(), s, go_rx, stop_rx)));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().context("cannot find own executable")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let producer = tokio::spawn(async move {
        let _ = rx.await;
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .args(["--role", "producer"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the producer")?;
        let mut stdout = String::new();
        if let Some(mut s) = child.stdout.take() {
            s.read_to_string(&mut stdout).await?;
        }
        let status = child.wait().await?;
        if !status.success() {
            bail!("producer exited with {status}");
        }
        let line = stdout.lines().last().unwrap_or_default();
        Ok::<ProducerReport, anyhow::Error>(serde_json::from_str(line)?)
    });
    let w = run_worker(a, &queue, total, move || {
        let _ = tx.send(());
        let _ = go_tx.send(());
    })
    .await?;
    let p = producer.await.context("producer task")??;
    let _ = stop_tx.send(());
    let sampled = match sampler {
        Some(task) => Some(task.await.context("memory sampler")?),
        None => None,
    };
    let end = probe.info("everything").await?;
    out["redis"] = json!({"total": cost(&start, &end, total)});
    let mut mem = serde_json::Map::new();
    mem.insert("used_memory_start".into(), json!(start.used_memory()));
    mem.insert("used_memory_end".into(), json!(end.used_memory()));
    if let (Some(s), Some((mut samples, t0))) = (every, sampled) {
        samples.push(((now_ms() - t0) / 1000.0, end.used_memory()));
        out["mem_sample_s"] = json!(s);
        out["mem_growth_bytes_last_half"] = json!(growth_last_half(&samples));
        out["mem_samples"] = json!(samples
            .iter()
            .map(|&(t, b)| json!([round_to(t, 1), b]))
            .collect::<Vec<_>>());
    }
    let left = leftovers(&probe, a).await?;
    out["mem_bytes_per_retained_job"] = left["bytes_per_retained_job"].clone();
    if let Some(o) = left.as_object() {
        mem.extend(o.clone());
    }
    out["mem"] = json!(mem);
    let t_last_done = w.tally.t_last_done;
    out["sent"] = json!(p.sent);
    out["producer_errors"] = json!(p.errors);
    out["achieved_rate"] = json!(p.achieved_rate);
    out["producer_max_lag_ms"] = json!(p.producer_max_lag_ms);
    work_fields(out, w, total, a);
    out["tail_ms"] = json!(r3(t_last_done - p.t_last));
    if p.errors > 0 || p.sent != total {
        out["ok"] = json!(false);
    }
    out["n"] = json!(total);
    Ok(())
}

/// When steady mode samples `used_memory`, in seconds.
fn mem_sample_every(a: &BenchArgs) -> Option<f64> {
    match a.mem_sample_s {
        Some(s) if s > 0.0 => Some(s),
        Some(_) => None,
        None => (a.duration >= 60.0).then_some(10.0),
    }
}

/// Samples `used_memory` every `every` seconds from `go` until `stop`; returns the samples
/// (seconds since `go`, bytes) and the time of `go`.
async fn sample_memory(
    probe: ServerProbe,
    every: f64,
    go: tokio::sync::oneshot::Receiver<()>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (Vec<(f64, i64)>, f64) {
    let mut samples = Vec::new();
    if go.await.is_err() {
        return (samples, now_ms());
    }
    let t0 = now_ms();
    for k in 0u32.. {
        let wait = t0 + f64::from(k) * every * 1000.0 - now_ms();
        if wait > 0.0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)) => {}
                _ = &mut stop => break,
            }
        }
        match probe.used_memory().await {
            Ok(bytes) => samples.push(((now_ms() - t0) / 1000.0, bytes)),
            Err(e) => eprintln!("leadq bench: memory sample failed: {e}"),
        }
    }
    (samples, t0)
}

/// `used_memory` at the end minus at the midpoint of the samples (`[seconds, bytes]`): the
/// sample whose time is nearest half the last one's.
fn growth_last_half(samples: &[(f64, i64)]) -> Option<i64> {
    let &(t_end, end) = samples.last()?;
    let mid = samples.iter().min_by(|a, b| {
        (a.0 - t_end / 2.0)
            .abs()
            .total_cmp(&(b.0 - t_end / 2.0).abs())
    })?;
    Some(end - mid.1)
}

#[cfg(test)]
mod tests {
    use super::super::args::parse as args;
    use super::*;

    #[test]
    fn growth_is_end_minus_the_sample_nearest_the_midpoint() {
        assert_eq!(growth_last_half(&[]), None);
        assert_eq!(growth_last_half(&[(0.0, 5)]), Some(0));
        let s = [
            (0.0, 100),
            (10.0, 200),
            (20.2, 260),
            (30.0, 300),
            (40.5, 310),
        ];
        assert_eq!(growth_last_half(&s), Some(310 - 260));
    }

    #[test]
    fn memory_sampling_defaults_to_10_s_for_runs_of_a_minute_or_more() {
        assert_eq!(mem_sample_every(&args(&[])), None);
        assert_eq!(mem_sample_every(&args(&["--duration", "600"])), Some(10.0));
        assert_eq!(
            mem_sample_every(&args(&["--duration", "600", "--mem-sample-s", "0"])),
            None
        );
        assert_eq!(mem_sample_every(&args(&["--mem-sample-s", "2"])), Some(2.0));
    }
}
