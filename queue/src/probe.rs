//! Server-side readings of the Redis a queue runs on: `INFO`, memory, and what finished work
//! leaves behind.
//!
//! Why it is here: the engine is the only code that speaks Redis, so the benchmark (`leadq
//! bench`) and operators read the server's cost through this module instead of sending
//! commands of their own. It knows the engine's key names (`keys.rs`), so a caller asks for "the
//! completed jobs a kind retains", never spells `{prefix:kind}:done` itself.
//!
//! A [`ServerProbe`] has a connection of its own, not a [`Queue`](crate::Queue)'s: a reading
//! taken before a queue connects then includes that queue's start-up, and the probe's own
//! commands are kept apart. It counts every command it sends (by its `INFO commandstats` name),
//! and each [`ServerInfo`] carries the counts from just before its `INFO`, so a caller
//! comparing two readings can leave the probe's own commands out.
//!
//! The `INFO` text is parsed here too ([`ServerInfo::parse`]): its format is Redis's, not any
//! caller's, and [`ServerProbe::used_memory`] needs it. What the figures mean to a caller (a
//! cost per job, what part of `used_memory` is the queue's data) stays with the caller.
//!
//! It reads one standalone Redis; on a Cluster each node keeps its own statistics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use leadq_platform::secret::Secret;
use redis::aio::MultiplexedConnection;

use crate::Keys;

/// Read-only commands [`ServerProbe::latency_histogram_bytes`] may run once each: running one
/// for the first time makes Redis allocate its latency histogram, and nothing else.
const HISTOGRAM_PROBES: [&str; 4] = ["lastsave", "lolwut", "echo", "dbsize"];

/// A probe that could not be made or a reading that failed: Redis's own error, shown as Redis
/// gave it. Not a [`QueueError`](crate::QueueError): a failed reading says nothing about
/// whether the queue can serve, and callers print it as it is.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The Redis URL does not parse (nothing was sent).
    #[error(transparent)]
    Url(redis::RedisError),
    /// Redis did not answer, or answered with an error.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A connection to Redis for readings, separate from any queue's.
#[derive(Clone)]
pub struct ServerProbe {
    conn: MultiplexedConnection,
    /// Commands sent so far, by their `INFO commandstats` name (`info`, `memory|usage`, …),
    /// shared by the clones: what a caller subtracts from the server's counts.
    sent: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl std::fmt::Debug for ServerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProbe")
            .field("sent", &self.sent())
            .finish_non_exhaustive()
    }
}

/// One `INFO` reading, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerInfo {
    /// `cmdstat_<name>` calls (commands run inside Lua included), by command name.
    pub calls: BTreeMap<String, u64>,
    /// `cmdstat_<name>` usec, by command name.
    pub usec: BTreeMap<String, u64>,
    /// Every other `field:value` line.
    pub kv: BTreeMap<String, String>,
    /// Commands the probe had sent before this reading's `INFO` (empty when parsed from text).
    pub own: BTreeMap<String, u64>,
    /// Commands with a latency histogram (`latency_percentiles_usec_<name>` lines): Redis
    /// allocates one the first time a command name runs, which shows in `used_memory`.
    pub histograms: u64,
}

impl ServerInfo {
    /// Parses the text of `INFO` (any sections).
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines().map(|l| l.trim_end_matches('\r')) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let Some((name, fields)) = rest.split_once(':') else {
                    continue;
                };
                for (k, v) in fields.split(',').filter_map(|f| f.split_once('=')) {
                    let v = v.parse().unwrap_or(0);
                    match k {
                        "calls" => s.calls.insert(name.to_owned(), v),
                        "usec" => s.usec.insert(name.to_owned(), v),
                        _ => None,
                    };
                }
            } else if let Some((k, v)) = line.split_once(':') {
                if k.starts_with("latency_percentiles_usec_") {
                    s.histograms += 1;
                }
                s.kv.insert(k.to_owned(), v.to_owned());
            }
        }
        s
    }

    /// A numeric field (0 when absent or not a number).
    pub fn num(&self, k: &str) -> f64 {
        self.kv.get(k).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }

    /// `used_memory`, in bytes.
    pub fn used_memory(&self) -> i64 {
        self.num("used_memory") as i64
    }
}

/// What finished work of one queue shard leaves in Redis until retention trims it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leftovers {
    /// Completed job ids retained (`ZCARD` of the `done` set).
    pub retained_done: u64,
    /// The `done` set's bytes (`MEMORY USAGE … SAMPLES 0`; 0 when it does not exist).
    pub done_zset_bytes: u64,
    /// Live deduplication keys (`SCAN`).
    pub dedupe_keys: u64,
}

impl ServerProbe {
    /// Connects to the Redis at `url` on a connection of its own. [`ProbeError::Url`] when
    /// `url` does not parse.
    pub async fn connect(url: &Secret) -> Result<Self, ProbeError> {
        Self::connect_with(url, &leadq_platform::config::RedisTls::default()).await
    }

    /// Like [`ServerProbe::connect`], over TLS for a `rediss://` URL with the deployment's CA
    /// and client certificate (`LEADQ_REDIS_*_FILE`), as the queue itself connects.
    pub async fn connect_with(
        url: &Secret,
        tls: &leadq_platform::config::RedisTls,
    ) -> Result<Self, ProbeError> {
        leadq_platform::tls::install_crypto_provider();
        let client = match crate::conn::certificates(tls) {
            Some(certs) => redis::Client::build_with_tls(url.expose(), certs),
            None => redis::Client::open(url.expose()),
        }
        .map_err(ProbeError::Url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Self {
            conn,
            sent: Arc::default(),
        })
    }

    /// The commands this probe (and its clones) has sent so far.
    pub fn sent(&self) -> BTreeMap<String, u64> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counts one command about to be sent; returns the counts before it.
    fn count(&self, name: &str) -> BTreeMap<String, u64> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let before = sent.clone();
        *sent.entry(name.to_owned()).or_default() += 1;
        before
    }

    /// `INFO <section>` (`everything` for a full reading), with [`ServerInfo::own`] set.
    pub async fn info(&self, section: &str) -> Result<ServerInfo, ProbeError> {
        let own = self.count("info");
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut s = ServerInfo::parse(&text);
        s.own = own;
        Ok(s)
    }

    /// `used_memory` alone (`INFO memory`).
    pub async fn used_memory(&self) -> Result<i64, ProbeError> {
        Ok(self.info("memory").await?.used_memory())
    }

    /// The bytes of one latency histogram: `used_memory` around the first run of a read-only
    /// command that has none yet. `None` when every candidate already has one, or memory did
    /// not grow. Run it while Redis is otherwise idle.
    pub async fn latency_histogram_bytes(&self) -> Result<Option<i64>, ProbeError> {
        let s = self.info("everything").await?;
        let Some(name) = HISTOGRAM_PROBES
            .into_iter()
            .find(|c| !s.kv.contains_key(&format!("latency_percentiles_usec_{c}")))
        else {
            return Ok(None);
        };
        let before = self.used_memory().await?;
        self.count(name);
        let mut cmd = redis::cmd(&name.to_ascii_uppercase());
        if name == "echo" {
            cmd.arg("x");
        }
        let _: redis::Value = cmd.query_async(&mut self.conn.clone()).await?;
        let after = self.used_memory().await?;
        Ok((after > before).then_some(after - before))
    }

    /// What finished work of `kind`'s queue (shard `shard`, under key prefix `prefix`) leaves
    /// in Redis: `ZCARD` and `MEMORY USAGE` of its `done` set, then a `SCAN` of its dedupe keys.
    pub async fn leftovers(
        &self,
        prefix: &str,
        kind: &str,
        shard: u16,
    ) -> Result<Leftovers, ProbeError> {
        let keys = Keys::new(prefix, kind, shard);
        let mut conn = self.conn.clone();
        self.count("zcard");
        let retained_done: u64 = redis::cmd("ZCARD")
            .arg(&keys.done)
            .query_async(&mut conn)
            .await?;
        self.count("memory|usage");
        let done_bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&keys.done)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        let pattern = format!("{}:dedupe:*", keys.tag);
        let (mut cursor, mut dedupe_keys) = (0u64, 0u64);
        loop {
            self.count("scan");
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            dedupe_keys += found.len() as u64;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(Leftovers {
            retained_done,
            done_zset_bytes: done_bytes.unwrap_or(0),
            dedupe_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:1000\r\nmem_clients_normal:200\r\n\
        used_memory_scripts_eval:100\r\n\r\n\
        # CPU\r\nused_cpu_sys_main_thread:0.500000\r\nused_cpu_user_main_thread:1.000000\r\n\
        # Commandstats\r\n\
        cmdstat_evalsha:calls=2,usec=100,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=30,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setinfo:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
        # Latencystats\r\n\
        latency_percentiles_usec_evalsha:p50=10.0,p99=20.0,p99.9=30.0\r\n\
        latency_percentiles_usec_info:p50=10.0,p99=20.0,p99.9=30.0\r\n";

    #[test]
    fn parses_info_sections_and_commandstats() {
        let s = ServerInfo::parse(INFO);
        assert_eq!(s.calls["evalsha"], 2);
        assert_eq!(s.calls["client|setinfo"], 2);
        assert_eq!(s.usec["info"], 30);
        assert_eq!(s.used_memory(), 1000);
        assert_eq!(s.histograms, 2);
        assert_eq!(s.num("used_cpu_user_main_thread"), 1.0);
        assert!(!s.kv.contains_key("# Memory"));
        assert!(s.own.is_empty());
    }
}
