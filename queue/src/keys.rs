//! Redis key names of one queue (one job kind).
//!
//! A kind's queue is split into shards (`LEADQ_QUEUE_SHARDS`, by tenant). Every key of a shard
//! starts with the same hash tag (`{<prefix>:<kind>}` for shard 0, `{<prefix>:<kind>:<n>}` for
//! the others), so all of them live in one Redis Cluster slot and every script can touch them
//! together, while the shards spread over the Cluster's primaries. There is no global key.

/// The keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{prefix:kind}`, the hash tag every key starts with.
    pub(crate) tag: String,
    /// ZSET of slots, one per ready job: id → virtual start tag, fair across tenants (see
    /// `lua/fair.lua`); fetch is ZPOPMIN.
    pub(crate) ready: String,
    /// ZSET (lex) `<tenant>|<priority>|<id>`: each tenant's ready jobs in the order they run.
    pub(crate) index: String,
    /// ZSET (lex) `<tenant>|<id>`: slots of paused tenants and of tenants at their cap.
    pub(crate) parked: String,
    /// HASH of the fair order: `v` virtual clock, `f:<tenant>` next tag, `w:<tenant>` weight,
    /// `p:<tenant>` paused, `c:<tenant>` concurrency cap, `r:<tenant>` running (capped only).
    pub(crate) fair: String,
    /// LIST of ready ids as versions before fair ordering (`cdb272c`) kept them; the reaper
    /// moves any it finds into `ready` (rolling upgrade), and no producer writes it any more.
    /// Remove it (here, in `lua/reap.lua` and `upkeep.rs`) once both hold: no deployment runs
    /// a version before `cdb272c`, and the tests that play an attacker with Redis access
    /// (`tests/it/security.rs`, `inject`) write forged jobs in the fair format instead.
    pub(crate) legacy_ready: String,
    /// HASH: `<id>` → envelope JSON, `<id>:a` attempts, `<id>:o` lease owner,
    /// `<id>:x` lease expiries, `<id>:e` last error code, `<id>:t` tenant, `<id>:p` priority
    /// (absent: normal), `<id>:d` its due mark when not due since its enqueue:
    /// `<due ms>[/<since ms>]`, when its wait starts (its `run_at`, the end of a snooze, a
    /// re-drive) and, after the `/`, when its turnaround starts (its `run_at`, a re-drive; a
    /// snooze keeps it).
    pub(crate) jobs: String,
    /// ZSET id → lease deadline (ms, Redis clock).
    pub(crate) leases: String,
    /// ZSET id → due time (ms): retries, rate-limited and delayed jobs.
    pub(crate) scheduled: String,
    /// ZSET id → dead-letter time (ms).
    pub(crate) dead: String,
    /// HASH: `<id>` → envelope, `<id>:r` reason, `<id>:c` last error code, `<id>:a` attempts.
    pub(crate) dead_data: String,
    /// ZSET id → completion time (ms), capped to the configured count.
    pub(crate) done: String,
    /// HASH of lifetime counters: completed, retried, failed, dead, rate_limited, recovered.
    pub(crate) stats: String,
    /// HASH: the retry policy (max_attempts, backoff_base_ms, backoff_max_ms), written by
    /// workers at start-up so a retry decision survives restarts and config drift in producers.
    pub(crate) policy: String,
    /// LIST of wake-up tokens that idle workers block on.
    pub(crate) wake: String,
    /// ZSET worker id → last heartbeat (ms).
    pub(crate) workers: String,
    /// HASH worker id → JSON description.
    pub(crate) worker_info: String,
}

impl Keys {
    /// The keys of shard `shard` of `kind`'s queue. Shard 0 keeps the names of an unsharded
    /// queue (`{prefix:kind}`), so turning sharding on strands nothing.
    pub(crate) fn new(prefix: &str, kind: &str, shard: u16) -> Self {
        let tag = if shard == 0 {
            format!("{{{prefix}:{kind}}}")
        } else {
            format!("{{{prefix}:{kind}:{shard}}}")
        };
        let k = |suffix: &str| format!("{tag}:{suffix}");
        Self {
            ready: k("fair_ready"),
            index: k("index"),
            parked: k("parked"),
            fair: k("fair"),
            legacy_ready: k("ready"),
            jobs: k("jobs"),
            leases: k("leases"),
            scheduled: k("scheduled"),
            dead: k("dead"),
            dead_data: k("dead_data"),
            done: k("done"),
            stats: k("stats"),
            policy: k("policy"),
            wake: k("wake"),
            workers: k("workers"),
            worker_info: k("worker_info"),
            tag,
        }
    }

    /// HASH tenant → jobs newly enqueued on the UTC day `day` (`YYYYMMDD`): what billing
    /// reconciles against what PostgreSQL recorded (`leadq_jobs::ops::billing`). Kept 8 days.
    pub(crate) fn usage(&self, day: &str) -> String {
        format!("{}:usage:{day}", self.tag)
    }

    /// The deduplication key of a message. Scoped by tenant, so one tenant's ids can never
    /// suppress another's.
    pub(crate) fn dedupe(&self, tenant: &uuid::Uuid, message_id: &str) -> String {
        format!("{}:dedupe:{tenant}:{message_id}", self.tag)
    }

    /// The job id of the *suspect* (a job whose lease expired before) `worker` runs now; a
    /// worker runs one suspect at a time (see `lua/fetch.lua`).
    pub(crate) fn suspect(&self, worker: &str) -> String {
        format!("{}:suspect:{worker}", self.tag)
    }

    /// Marks an external delivery id (e.g. `X-Chatwoot-Delivery`) as seen for a tenant.
    pub(crate) fn seen(&self, tenant: &uuid::Uuid, id: &str) -> String {
        format!("{}:seen:{tenant}:{id}", self.tag)
    }
}

/// The keys of one tenant's ingest admission (rate limit and daily quota). They share their
/// own hash tag `{<prefix>:limits:<tenant>}`, apart from every queue's, so the admission
/// script touches one Cluster slot.
#[derive(Debug, Clone)]
pub(crate) struct AdmitKeys {
    /// STRING: the GCRA theoretical arrival time of the tenant's next request (ms).
    pub(crate) gcra: String,
    /// STRING: leads admitted today (UTC), expiring with the day.
    pub(crate) leads_today: String,
}

impl AdmitKeys {
    /// The admission keys of `tenant` for the UTC day `day` (`YYYYMMDD`).
    pub(crate) fn new(prefix: &str, tenant: &uuid::Uuid, day: &str) -> Self {
        let tag = format!("{{{prefix}:limits:{tenant}}}");
        Self {
            gcra: format!("{tag}:gcra"),
            leads_today: format!("{tag}:leads:{day}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_shares_the_hash_tag() {
        let k = super::Keys::new("leadq", "lead_score", 0);
        assert_eq!(k.tag, "{leadq:lead_score}");
        for key in [
            &k.ready, &k.index, &k.parked, &k.fair, &k.jobs, &k.leases, &k.dead, &k.workers,
        ] {
            assert!(key.starts_with("{leadq:lead_score}:"), "{key}");
        }
        assert!(k
            .dedupe(&uuid::Uuid::nil(), "m1")
            .starts_with("{leadq:lead_score}:dedupe:"));
        let k3 = super::Keys::new("leadq", "lead_score", 3);
        assert_eq!(k3.tag, "{leadq:lead_score:3}");
        assert!(k3.jobs.starts_with("{leadq:lead_score:3}:"));
    }

    #[test]
    fn admission_keys_share_the_tenant_limits_tag() {
        let t = uuid::Uuid::nil();
        let k = super::AdmitKeys::new("leadq", &t, "20261204");
        let tag = format!("{{leadq:limits:{t}}}");
        assert_eq!(k.gcra, format!("{tag}:gcra"));
        assert_eq!(k.leads_today, format!("{tag}:leads:20261204"));
    }
}
