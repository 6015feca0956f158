//! Fair mode: tenant A enqueues N jobs at once, then tenant B enqueues `--rate` jobs/s for
//! `--duration` seconds while A's backlog drains. Reports B's latency (`b_lat_ms`) and A's
//! backlog left when B's last job was enqueued: what one tenant's burst costs another.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::harness::{connect, enqueue_bulk, tenant_envelope, TENANT_B};
use super::worker::{run_worker, summarize, work_fields};
use super::{now_ms, BenchArgs, KIND};

/// Fair mode (see [`super::Mode::Fair`]).
pub(super) async fn run(a: &BenchArgs, out: &mut serde_json::Value) -> anyhow::Result<()> {
    let queue = connect(a).await?;
    out["n"] = json!(a.n);
    let e = enqueue_bulk(a, &queue).await?;
    if let (Some(o), Some(e)) = (out.as_object_mut(), e.as_object()) {
        o.extend(e.clone());
    }
    let b_total = (a.rate * a.duration).round() as usize;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (rate, bytes, q) = (a.rate, a.payload_bytes, queue.clone());
    let producer = tokio::spawn(async move {
        let _ = rx.await;
        let run = uuid::Uuid::now_v7().to_string();
        let t0 = now_ms();
        for i in 0..b_total {
            let due = t0 + i as f64 * 1000.0 / rate;
            let wait = due - now_ms();
            if wait > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
            }
            let job = tenant_envelope(TENANT_B, &run, i as u64, now_ms(), bytes);
            q.enqueue(vec![job]).await?;
        }
        Ok::<u64, anyhow::Error>(q.counts(KIND).await?.pending)
    });
    let w = run_worker(a, &queue, a.n + b_total, move || {
        let _ = tx.send(());
    })
    .await?;
    let backlog_left = producer.await.context("tenant B producer")??;
    let lat_b = w.tally.lat_b.clone();
    work_fields(out, w, a.n + b_total, a);
    out["b_rate"] = json!(a.rate);
    out["b_sent"] = json!(b_total);
    out["b_lat_ms"] = summarize(lat_b);
    out["a_backlog_left_when_b_finished_sending"] = json!(backlog_left);
    Ok(())
}
