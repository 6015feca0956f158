//! The harness's side of the queue: the bench queue configured as production runs it, the
//! jobs it sends (payload and signed envelope), and bulk enqueueing.
//!
//! Every mode builds its queue and its jobs here, so the figures of different modes come from
//! the same settings and the same bytes on the wire.

use std::time::Duration;

use anyhow::Context;
use chrono::{TimeZone, Utc};
use leadq_platform::config::{KindSettings, Needs, QueueSettings, Settings};
use leadq_platform::keyring::Keyring;
use leadq_queue::envelope::Envelope;
use leadq_queue::{NewJob, Queue};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{now_ms, r3, redis_url, BenchArgs, KIND};

/// A bench job's payload: its sequence number, when it was enqueued (for the latency), and
/// padding up to `--payload-bytes`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Payload {
    pub(super) seq: u64,
    pub(super) t_enq: f64,
    pad: String,
}

leadq_queue::v1_payload!(Payload);

fn payload(seq: u64, t_enq: f64, bytes: usize) -> serde_json::Value {
    let base = serde_json::to_string(&json!({"seq": seq, "t_enq": t_enq, "pad": ""}))
        .map(|s| s.len())
        .unwrap_or(0);
    json!({"seq": seq, "t_enq": t_enq, "pad": "x".repeat(bytes.saturating_sub(base))})
}

/// Tenant B of the fair mode (tenant A, and every other mode, use the nil tenant).
pub(super) const TENANT_B: uuid::Uuid = uuid::Uuid::from_u128(0xb << 64);

/// The `i`-th newcomer of `--arrivals new`: a tenant of its own, counted with B.
pub(super) fn newcomer(i: usize) -> uuid::Uuid {
    uuid::Uuid::from_u128((0xb << 64) + 1 + i as u128)
}

/// Tenant B or a newcomer: the arrivals whose latency fair mode reports.
pub(super) fn is_arrival(tenant: uuid::Uuid) -> bool {
    tenant.as_u128() >> 64 == 0xb
}

pub(super) fn envelope(run: &str, seq: u64, t_enq: f64, bytes: usize) -> NewJob {
    tenant_envelope(uuid::Uuid::nil(), run, seq, t_enq, bytes)
}

/// The `k`-th of the tenants a backlog is spread over: the first is the nil tenant every
/// other mode uses, so one busy tenant is the same run as before.
pub(super) fn busy_tenant(k: usize) -> uuid::Uuid {
    match k {
        0 => uuid::Uuid::nil(),
        k => uuid::Uuid::from_u128(0x1_0000_0000 + k as u128),
    }
}

pub(super) fn tenant_envelope(
    tenant: uuid::Uuid,
    run: &str,
    seq: u64,
    t_enq: f64,
    bytes: usize,
) -> NewJob {
    NewJob {
        envelope: Envelope {
            // The enqueue time the latency figures start from, not the moment it was built.
            timestamp: Utc
                .timestamp_millis_opt(t_enq as i64)
                .single()
                .unwrap_or_default(),
            ..Envelope::new(tenant, "bench", KIND, payload(seq, t_enq, bytes))
                .message_id(format!("{run}-{seq}"))
                .correlation_id(run)
        },
        run_at: None,
        priority: Default::default(),
    }
}

/// Retention of finished work: production's settings (the `LEADQ_*` environment, or its
/// defaults), unless the command line sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) struct Retention {
    keep_done: u64,
    keep_done_secs: u64,
    dedupe_ttl_secs: u64,
}

pub(super) fn retention(a: &BenchArgs) -> anyhow::Result<Retention> {
    let none = Needs {
        database: false,
        redis: false,
        keys: false,
    };
    let prod = Settings::from_env(none, &[])
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .queue;
    Ok(Retention {
        keep_done: a.keep_done.unwrap_or(prod.keep_done),
        keep_done_secs: a.keep_done_secs.unwrap_or(prod.keep_done_for.as_secs()),
        dedupe_ttl_secs: a.dedupe_ttl_secs.unwrap_or(prod.dedupe_ttl.as_secs()),
    })
}

fn queue_settings(a: &BenchArgs, r: Retention) -> QueueSettings {
    let mut kinds = std::collections::BTreeMap::new();
    kinds.insert(
        KIND,
        KindSettings {
            concurrency: a.c,
            max_attempts: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
        },
    );
    QueueSettings {
        prefix: a.queue.clone(),
        lease: Duration::from_secs(30),
        max_lease_expiries: 3,
        shutdown_timeout: Duration::from_secs(10),
        kinds,
        worker_kinds: vec![KIND],
        dedupe_ttl: Duration::from_secs(r.dedupe_ttl_secs),
        keep_done: r.keep_done,
        keep_done_for: Duration::from_secs(r.keep_done_secs),
        dead_letter_ttl: Duration::from_secs(86_400),
        shards: 1,
        redis_cluster: false,
        redis_tls: Default::default(),
    }
}

pub(super) async fn connect(a: &BenchArgs) -> anyhow::Result<Queue> {
    let url = redis_url(a);
    // The bench signs and verifies like production. Its phases run as separate processes (the
    // harness's enqueue/work split, the steady producer child), so the key is derived from the
    // queue name: a benchmark key, not a secret.
    let key: [u8; 32] = Sha256::digest(format!("leadq-bench:{}", a.queue)).into();
    let signer = leadq_queue::signing::Signer::new(Keyring::single("bench", key));
    Queue::connect(&url, queue_settings(a, retention(a)?), signer)
        .await
        .context("Failed to connect to Redis")
}

/// Enqueues jobs `seq` in `range` in chunks of `--chunk`; returns the seconds it took.
pub(super) async fn enqueue_range(
    a: &BenchArgs,
    queue: &Queue,
    run: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<f64> {
    enqueue_spread(a, queue, run, range, 1).await
}

/// [`enqueue_range`] with job `seq` going to [`busy_tenant`]`(seq % tenants)`.
pub(super) async fn enqueue_spread(
    a: &BenchArgs,
    queue: &Queue,
    run: &str,
    range: std::ops::Range<usize>,
    tenants: usize,
) -> anyhow::Result<f64> {
    let tenants = tenants.max(1);
    let t0 = now_ms();
    let mut start = range.start;
    while start < range.end {
        let end = (start + a.chunk.max(1)).min(range.end);
        let t_enq = now_ms();
        let jobs = (start..end)
            .map(|i| {
                let tenant = busy_tenant(i % tenants);
                tenant_envelope(tenant, run, i as u64, t_enq, a.payload_bytes)
            })
            .collect();
        queue.enqueue(jobs).await?;
        start = end;
    }
    Ok((now_ms() - t0) / 1000.0)
}

pub(super) async fn enqueue_bulk(
    a: &BenchArgs,
    queue: &Queue,
    tenants: usize,
) -> anyhow::Result<serde_json::Value> {
    let run = uuid::Uuid::now_v7().to_string();
    let secs = enqueue_spread(a, queue, &run, 0..a.n, tenants).await?;
    Ok(
        json!({"enqueued": a.n, "chunk": a.chunk, "enqueue_s": r3(secs),
              "enqueue_jobs_per_s": (a.n as f64 / secs).round()}),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::args::parse as args;
    use super::*;

    #[test]
    fn retention_is_production_unless_set() {
        let prod = Settings::load(
            &BTreeMap::new(),
            Needs {
                database: false,
                redis: false,
                keys: false,
            },
            &[],
        )
        .map(|s| s.queue)
        .ok();
        let a = args(&[]);
        let r = retention(&a).ok();
        // The test environment may set LEADQ_KEEP_DONE; then both read it.
        if let (Some(prod), Some(r)) = (prod, r) {
            if std::env::vars().all(|(k, _)| !k.starts_with("LEADQ_")) {
                assert_eq!(r.keep_done, prod.keep_done);
                assert_eq!(r.keep_done_secs, prod.keep_done_for.as_secs());
                assert_eq!(r.dedupe_ttl_secs, prod.dedupe_ttl.as_secs());
            }
        }
        let set = args(&[
            "--keep-done",
            "5",
            "--keep-done-secs",
            "6",
            "--dedupe-ttl-secs",
            "7",
        ]);
        let r = retention(&set).ok();
        assert_eq!(
            r,
            Some(Retention {
                keep_done: 5,
                keep_done_secs: 6,
                dedupe_ttl_secs: 7
            })
        );
        let q = queue_settings(
            &set,
            Retention {
                keep_done: 5,
                keep_done_secs: 6,
                dedupe_ttl_secs: 7,
            },
        );
        assert_eq!(q.keep_done, 5);
        assert_eq!(q.keep_done_for, Duration::from_secs(6));
        assert_eq!(q.dedupe_ttl, Duration::from_secs(7));
    }
}
