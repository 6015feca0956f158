//! Fair mode: N jobs are enqueued at once, spread over the busy tenants, then jobs arrive at
//! `--rate` per second for `--duration` seconds while that backlog drains. Reports the
//! arrivals' latency (`b_lat_ms`, `b_first_ms`), the backlog left when the last one was sent
//! (what a burst costs others), and Redis's cost per job over the work phase (`redis.work`).
//!
//! `--tenants T` spreads the backlog over T − 1 busy tenants (one, tenant A, when T ≤ 2), so
//! the same run with 2 and with 10,000 tenants shows whether fetching and fairness stay flat
//! when many tenants hold ready work. The arrivals start once each busy tenant has had a job
//! taken: the busy tenants are then in the rotation, as tenants holding ready work are (were
//! they all new, an arrival would rightly queue behind their first jobs, which came first).
//! `--arrivals one` (the default) sends them all as tenant B: one tenant's share against a
//! burst (B sending faster than 1/T of the throughput waits for that share, as fair queuing
//! means it to). `--arrivals new` sends each from a tenant of its own: `b_lat_ms` is then how
//! long a new tenant's first job waits.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::args::Arrivals;
use super::cost::{self, cost};
use super::harness::{connect, enqueue_bulk, newcomer, tenant_envelope, TENANT_B};
use super::worker::{run_worker, summarize, work_fields};
use super::{now_ms, BenchArgs, KIND};

/// Fair mode (see [`super::Mode::Fair`]).
pub(super) async fn run(a: &BenchArgs, out: &mut serde_json::Value) -> anyhow::Result<()> {
    let busy = a.tenants.max(2) - 1;
    let probe = cost::probe(a).await?;
    let queue = connect(a).await?;
    out["n"] = json!(a.n);
    out["tenants"] = json!(busy + 1);
    let e = enqueue_bulk(a, &queue, busy).await?;
    if let (Some(o), Some(e)) = (out.as_object_mut(), e.as_object()) {
        o.extend(e.clone());
    }
    let b_total = (a.rate * a.duration).round() as usize;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (rate, bytes, arrivals, q) = (a.rate, a.payload_bytes, a.arrivals, queue.clone());
    let backlog = a.n as u64;
    let producer = tokio::spawn(async move {
        let _ = rx.await;
        // Once every busy tenant has had a job taken (see the module's doc).
        let first_round = backlog.saturating_sub(busy as u64);
        while q.counts(KIND).await?.pending > first_round {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let run = uuid::Uuid::now_v7().to_string();
        let t0 = now_ms();
        for i in 0..b_total {
            let due = t0 + i as f64 * 1000.0 / rate;
            let wait = due - now_ms();
            if wait > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
            }
            let tenant = match arrivals {
                Arrivals::One => TENANT_B,
                Arrivals::New => newcomer(i),
            };
            let job = tenant_envelope(tenant, &run, i as u64, now_ms(), bytes);
            q.enqueue(vec![job]).await?;
        }
        Ok::<u64, anyhow::Error>(q.counts(KIND).await?.pending)
    });
    // The work phase's cost includes B's enqueues: the same in every run of the pair.
    let before = probe.info("everything").await?;
    let w = run_worker(a, &queue, a.n + b_total, move || {
        let _ = tx.send(());
    })
    .await?;
    let after = probe.info("everything").await?;
    let backlog_left = producer.await.context("tenant B producer")??;
    let jobs = w.tally.completed;
    let lat_b = w.tally.lat_b.clone();
    work_fields(out, w, a.n + b_total, a);
    out["redis"] = json!({ "work": cost(&before, &after, jobs) });
    out["arrivals"] = json!(a.arrivals);
    out["b_rate"] = json!(a.rate);
    out["b_sent"] = json!(b_total);
    out["b_first_ms"] = json!(lat_b.first());
    out["b_lat_ms"] = summarize(lat_b);
    out["a_backlog_left_when_b_finished_sending"] = json!(backlog_left);
    Ok(())
}
