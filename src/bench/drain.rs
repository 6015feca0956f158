//! Drain mode: enqueue N jobs (and `--backlog` B more behind them), then drain the N with one
//! worker, reading Redis around each phase.
//!
//! `--phase enqueue|work` runs one phase per process, as the harness does between its own
//! processes; the readings then cover that phase alone.

use leadq_queue::probe::ServerInfo;
use serde_json::json;

use super::cost::{self, add_cost, cost, held_memory, histogram_correction, leftovers, per_item};
use super::harness::{connect, enqueue_range, retention};
use super::worker::{run_worker, work_fields};
use super::{r3, BenchArgs, Phase};

/// Drain mode, with the Redis readings around each phase.
pub(super) async fn run(a: &BenchArgs, out: &mut serde_json::Value) -> anyhow::Result<()> {
    out["n"] = json!(a.n);
    out["phase"] = json!(a.phase);
    out["backlog"] = json!(a.backlog);
    out["retention"] = json!(retention(a)?);
    let probe = cost::probe(a).await?;
    let mut redis = serde_json::Map::new();
    // The reading before the queue connects: the enqueue phase includes its start-up, as the
    // harness's does (it reads Redis between processes).
    let first = probe.info("everything").await?;
    let queue = connect(a).await?;
    // (empty, after enqueue, after the backlog's enqueue)
    let mut enqueued: Option<(ServerInfo, ServerInfo, Option<ServerInfo>)> = None;
    let mut enqueue_cost = None;
    if matches!(a.phase, Phase::All | Phase::Enqueue) {
        let run = uuid::Uuid::now_v7().to_string();
        let secs = enqueue_range(a, &queue, &run, 0..a.n).await?;
        out["enqueued"] = json!(a.n);
        out["chunk"] = json!(a.chunk);
        out["enqueue_s"] = json!(r3(secs));
        out["enqueue_jobs_per_s"] = json!((a.n as f64 / secs).round());
        let queued = probe.info("everything").await?;
        let c = cost(&first, &queued, a.n);
        redis.insert("enqueue".into(), json!(c));
        enqueue_cost = Some(c);
        let mut backlogged = None;
        if a.backlog > 0 {
            // Behind the measured jobs in the same tenant's FIFO: the worker takes the measured
            // ones first, and the backlog stays in the ready set all through the work phase.
            let range = a.n..a.n + a.backlog;
            let secs = enqueue_range(a, &queue, &run, range).await?;
            let b = probe.info("everything").await?;
            out["backlog_enqueue_s"] = json!(r3(secs));
            redis.insert(
                "backlog_enqueue".into(),
                json!(cost(&queued, &b, a.backlog)),
            );
            backlogged = Some(b);
        }
        enqueued = Some((first.clone(), queued, backlogged));
    }
    // (before, after the work phase, what finished work left)
    let mut worked: Option<(ServerInfo, ServerInfo, serde_json::Value)> = None;
    if matches!(a.phase, Phase::All | Phase::Work) {
        let before = match &enqueued {
            Some((_, q, b)) => b.clone().unwrap_or_else(|| q.clone()),
            None => first.clone(),
        };
        let w = run_worker(a, &queue, a.n, || {}).await?;
        let after = probe.info("everything").await?;
        // Backlog jobs the worker had prefetched when the N-th measured one completed ran too,
        // inside this window: their cost is divided among them, not charged to the measured.
        let jobs = w.tally.completed + w.tally.backlog_completed;
        if a.backlog > 0 {
            out["backlog_completed"] = json!(w.tally.backlog_completed);
        }
        work_fields(out, w, a.n, a);
        let c = cost(&before, &after, jobs);
        if let Some(e) = &enqueue_cost {
            redis.insert("total".into(), json!(add_cost(e, &c)));
        }
        redis.insert("work".into(), json!(c));
        let left = leftovers(&probe, a).await?;
        worked = Some((before, after, left));
    } else {
        out["ok"] = json!(true);
    }
    out["redis"] = json!(redis);

    // Memory, now that Redis is idle.
    let last = match (&worked, &enqueued) {
        (Some((_, after, _)), _) => after,
        (None, Some((_, q, b))) => b.as_ref().unwrap_or(q),
        (None, None) => &first,
    };
    let (hb, exact) = histogram_correction(&probe, &first, last).await;
    let mut mem = serde_json::Map::new();
    mem.insert(
        "latency_histograms_added".into(),
        json!(last.histograms.saturating_sub(first.histograms)),
    );
    mem.insert("latency_histogram_bytes".into(), json!(hb));
    if !exact {
        mem.insert("uncorrected".into(), json!(true));
    }
    if let Some((empty, queued, backlogged)) = &enqueued {
        mem.insert("used_memory_empty".into(), json!(empty.used_memory()));
        mem.insert(
            "used_memory_after_enqueue".into(),
            json!(queued.used_memory()),
        );
        out["mem_bytes_per_queued_job"] =
            per_item(held_memory(queued, hb) - held_memory(empty, hb), a.n as u64);
        if let Some(b) = backlogged {
            mem.insert("used_memory_after_backlog".into(), json!(b.used_memory()));
            out["mem_bytes_per_backlog_job"] = per_item(
                held_memory(b, hb) - held_memory(queued, hb),
                a.backlog as u64,
            );
        }
    }
    if let Some((_, after, left)) = &worked {
        mem.insert("used_memory_after_drain".into(), json!(after.used_memory()));
        out["mem_bytes_per_retained_job"] = left["bytes_per_retained_job"].clone();
        if let (Some((empty, _, None)), true) = (&enqueued, a.backlog == 0) {
            // What every finished job leaves until retention trims it: its share of the done
            // set and its dedupe key (plus the queue's few fixed keys).
            let residual = held_memory(after, hb) - held_memory(empty, hb);
            let done_bytes = left["done_zset_bytes"].as_i64().unwrap_or(0);
            let dedupe_keys = left["dedupe_keys"].as_u64().unwrap_or(0);
            mem.insert(
                "residual_bytes_per_job".into(),
                per_item(residual, a.n as u64),
            );
            mem.insert(
                "bytes_per_dedupe_key".into(),
                per_item(residual - done_bytes, dedupe_keys),
            );
        }
        if let Some(o) = left.as_object() {
            mem.extend(o.clone());
        }
    }
    out["mem"] = json!(mem);
    Ok(())
}
