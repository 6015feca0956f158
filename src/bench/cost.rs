//! What the harness costs Redis, per job: the `redis` and `mem*` fields of the JSON line.
//!
//! The readings themselves (`INFO`, `MEMORY USAGE`, `SCAN`, …) come from the queue crate's
//! [`ServerProbe`], on a connection of its own; this file turns two readings into the
//! harness's `per_job` figures ([`cost`]) and `used_memory` into the bytes that are the
//! queue's data ([`held_memory`]). That arithmetic is the bench protocol's, so it stays here.

use std::collections::BTreeMap;

use anyhow::Context;
use leadq_queue::probe::{ProbeError, ServerInfo, ServerProbe};
use serde::Serialize;
use serde_json::json;

use super::{r3, redis_url, round_to, BenchArgs, KIND};

/// The Redis cost of the work done between two readings, per job: the harness's `per_job`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Cost {
    pub(super) jobs: usize,
    /// Σ Δcalls over every `cmdstat_*` (commands run inside Lua included), less the bench's own.
    pub(super) cmds_total: u64,
    pub(super) cmds_per_job: f64,
    pub(super) cmd_usec_per_job: f64,
    pub(super) redis_cpu_us_per_job: f64,
    pub(super) net_in_bytes_per_job: f64,
    pub(super) net_out_bytes_per_job: f64,
    pub(super) reads_per_job: f64,
    pub(super) writes_per_job: f64,
    /// Calls per job by command name.
    pub(super) cmds: BTreeMap<String, f64>,
}

/// The bench's probe on the Redis under test. A `--host` that makes no URL is reported as
/// Redis words it; a Redis that does not answer, as a failed connection.
pub(super) async fn probe(a: &BenchArgs) -> anyhow::Result<ServerProbe> {
    match ServerProbe::connect(&redis_url(a)).await {
        Ok(probe) => Ok(probe),
        Err(e @ ProbeError::Url(_)) => Err(e.into()),
        Err(e) => Err(e).context("Failed to connect to Redis (probe)"),
    }
}

/// The cost of what happened between `before` and `after`, divided by `jobs`. The bench's own
/// commands (the INFO of `before` and whatever its probe sent until the INFO of `after`) are
/// subtracted.
pub(super) fn cost(before: &ServerInfo, after: &ServerInfo, jobs: usize) -> Cost {
    let mut calls: BTreeMap<String, i64> = after
        .calls
        .iter()
        .map(|(k, v)| {
            let was = before.calls.get(k).copied().unwrap_or(0);
            (k.clone(), *v as i64 - was as i64)
        })
        .collect();
    for (k, v) in &after.own {
        let own = v.saturating_sub(before.own.get(k).copied().unwrap_or(0));
        *calls.entry(k.clone()).or_default() -= own as i64;
    }
    calls.retain(|_, v| *v > 0);
    let usec: u64 = calls
        .keys()
        .map(|k| {
            let a = after.usec.get(k).copied().unwrap_or(0);
            a.saturating_sub(before.usec.get(k).copied().unwrap_or(0))
        })
        .sum();
    let total: i64 = calls.values().sum();
    let n = jobs.max(1) as f64;
    let d = |k: &str| after.num(k) - before.num(k);
    let cpu_s = d("used_cpu_user_main_thread") + d("used_cpu_sys_main_thread");
    Cost {
        jobs,
        cmds_total: total as u64,
        cmds_per_job: r3(total as f64 / n),
        cmd_usec_per_job: r3(usec as f64 / n),
        redis_cpu_us_per_job: r3(cpu_s * 1e6 / n),
        net_in_bytes_per_job: round_to(d("total_net_input_bytes") / n, 1),
        net_out_bytes_per_job: round_to(d("total_net_output_bytes") / n, 1),
        reads_per_job: r3(d("total_reads_processed") / n),
        writes_per_job: r3(d("total_writes_processed") / n),
        cmds: calls
            .into_iter()
            .map(|(k, v)| (k, round_to(v as f64 / n, 4)))
            .collect(),
    }
}

/// Two phases' costs added per job (the harness's `add_per_job`); `jobs` is the first's.
pub(super) fn add_cost(a: &Cost, b: &Cost) -> Cost {
    let mut cmds = a.cmds.clone();
    for (k, v) in &b.cmds {
        let e = cmds.entry(k.clone()).or_default();
        *e = round_to(*e + v, 4);
    }
    Cost {
        jobs: a.jobs,
        cmds_total: a.cmds_total + b.cmds_total,
        cmds_per_job: r3(a.cmds_per_job + b.cmds_per_job),
        cmd_usec_per_job: r3(a.cmd_usec_per_job + b.cmd_usec_per_job),
        redis_cpu_us_per_job: r3(a.redis_cpu_us_per_job + b.redis_cpu_us_per_job),
        net_in_bytes_per_job: round_to(a.net_in_bytes_per_job + b.net_in_bytes_per_job, 1),
        net_out_bytes_per_job: round_to(a.net_out_bytes_per_job + b.net_out_bytes_per_job, 1),
        reads_per_job: r3(a.reads_per_job + b.reads_per_job),
        writes_per_job: r3(a.writes_per_job + b.writes_per_job),
        cmds,
    }
}

/// `used_memory` less what is not the queue's data and comes once or comes and goes:
/// client connection buffers, the cached Lua scripts, and the latency histogram Redis
/// allocates for each command name the first time it runs (`histogram_bytes` each).
pub(super) fn held_memory(s: &ServerInfo, histogram_bytes: i64) -> i64 {
    s.used_memory()
        - s.num("mem_clients_normal") as i64
        - s.num("used_memory_scripts_eval") as i64
        - s.histograms as i64 * histogram_bytes
}

/// What [`held_memory`] needs: the bytes of a latency histogram when `first` to `last` added
/// some (else any value gives the same differences: 0), and whether that is exact.
pub(super) async fn histogram_correction(
    probe: &ServerProbe,
    first: &ServerInfo,
    last: &ServerInfo,
) -> (i64, bool) {
    if last.histograms == first.histograms {
        return (0, true);
    }
    match probe.latency_histogram_bytes().await {
        Ok(Some(b)) => (b, true),
        Ok(None) => (0, false),
        Err(e) => {
            eprintln!("leadq bench: cannot measure a latency histogram: {e}");
            (0, false)
        }
    }
}

/// What finished work leaves in Redis (retained completed ids, the `done` set's bytes, live
/// dedupe keys), as the JSON fields the `mem` object takes.
pub(super) async fn leftovers(
    probe: &ServerProbe,
    a: &BenchArgs,
) -> anyhow::Result<serde_json::Value> {
    let left = probe.leftovers(&a.queue, KIND, 0).await?;
    let done_bytes = left.done_zset_bytes;
    Ok(
        json!({"retained_done": left.retained_done, "done_zset_bytes": done_bytes,
              "bytes_per_retained_job": per_item(done_bytes as i64, left.retained_done),
              "dedupe_keys": left.dedupe_keys}),
    )
}

/// Whole bytes per item, or null when there are no items.
pub(super) fn per_item(bytes: i64, items: u64) -> serde_json::Value {
    if items == 0 {
        serde_json::Value::Null
    } else {
        json!((bytes as f64 / items as f64).round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:1000\r\nmem_clients_normal:200\r\n\
        used_memory_scripts_eval:100\r\n\r\n\
        # Stats\r\ntotal_reads_processed:10\r\ntotal_writes_processed:9\r\n\
        total_net_input_bytes:1000\r\ntotal_net_output_bytes:5000\r\n\
        # CPU\r\nused_cpu_sys_main_thread:0.500000\r\nused_cpu_user_main_thread:1.000000\r\n\
        # Commandstats\r\n\
        cmdstat_evalsha:calls=2,usec=100,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=30,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setinfo:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
        # Latencystats\r\n\
        latency_percentiles_usec_evalsha:p50=10.0,p99=20.0,p99.9=30.0\r\n\
        latency_percentiles_usec_info:p50=10.0,p99=20.0,p99.9=30.0\r\n";

    /// The parsing assertions of this reading are `leadq_queue::probe`'s
    /// `parses_info_sections_and_commandstats`; what the bench makes of it is here.
    #[test]
    fn held_memory_leaves_out_clients_scripts_and_latency_histograms() {
        let s = ServerInfo::parse(INFO);
        assert_eq!(held_memory(&s, 0), 700);
        assert_eq!(held_memory(&s, 50), 600);
    }

    #[test]
    fn cost_is_per_job_and_leaves_out_the_bench_own_commands() {
        let mut before = ServerInfo::parse(INFO);
        before.own = BTreeMap::from([("info".into(), 4)]);
        let after_text = INFO
            .replace("evalsha:calls=2,usec=100", "evalsha:calls=12,usec=300")
            .replace("info:calls=3,usec=30", "info:calls=6,usec=60")
            .replace("used_cpu_user_main_thread:1.000000", "used_cpu_user_main_thread:1.010000")
            .replace("total_reads_processed:10", "total_reads_processed:20")
            .replace("total_net_output_bytes:5000", "total_net_output_bytes:6000")
            + "cmdstat_hset:calls=30,usec=40,usec_per_call=1.33,rejected_calls=0,failed_calls=0\r\n";
        let mut after = ServerInfo::parse(&after_text);
        // The probe sent 2 INFOs and a ZCARD between the readings: `before`'s own and one more.
        after.own = BTreeMap::from([("info".into(), 6), ("zcard".into(), 1)]);
        let c = cost(&before, &after, 10);
        // evalsha 10 + hset 30 + info (3 - 2 own) 1; the probe's zcard is not in commandstats.
        assert_eq!(c.cmds_total, 41);
        assert_eq!(c.cmds_per_job, 4.1);
        assert_eq!(c.cmds["evalsha"], 1.0);
        assert_eq!(c.cmds["hset"], 3.0);
        assert_eq!(c.cmds["info"], 0.1);
        assert!(!c.cmds.contains_key("client|setinfo"));
        assert!(!c.cmds.contains_key("zcard"));
        assert_eq!(c.cmd_usec_per_job, (200.0 + 40.0 + 30.0) / 10.0);
        assert_eq!(c.redis_cpu_us_per_job, 1000.0);
        assert_eq!(c.reads_per_job, 1.0);
        assert_eq!(c.writes_per_job, 0.0);
        assert_eq!(c.net_out_bytes_per_job, 100.0);
        assert_eq!(c.jobs, 10);
    }

    #[test]
    fn phases_add_per_job() {
        let a = ServerInfo::parse(INFO);
        let b = ServerInfo::parse(
            &INFO.replace("evalsha:calls=2,usec=100", "evalsha:calls=4,usec=100"),
        );
        let mut own_b = b.clone();
        own_b.own = BTreeMap::from([("info".into(), 1)]);
        let one = cost(&a, &own_b, 2);
        let total = add_cost(&one, &one);
        assert_eq!(total.jobs, 2);
        assert_eq!(total.cmds_per_job, 2.0);
        assert_eq!(total.cmds["evalsha"], 2.0);
        assert_eq!(total.cmds_total, 4);
    }

    #[test]
    fn bytes_per_item() {
        assert_eq!(per_item(1000, 0), serde_json::Value::Null);
        assert_eq!(per_item(1000, 3), json!(333));
        assert_eq!(per_item(-10, 4), json!(-3));
    }
}
