//! Shared state of error alerts (`leadq-notify`): which fingerprints were sent lately, and the
//! digest of everything else, held in Redis so every process of a deployment sees the same.
//!
//! Generic on purpose: it knows fingerprints, counts and one-line summaries, not what an alert
//! is. Two atomic scripts:
//!
//! - [`AlertState::record`] an occurrence: the first one of a fingerprint that wants an
//!   immediate message within the rate-limit window gets [`Recorded::Send`] (one process wins,
//!   whichever asks first); the others are counted into the digest (as repeats, or as
//!   ordinary lines for occurrences that never wanted an immediate message).
//! - [`AlertState::take_due_digest`]: once the digest's window has passed since its first
//!   line, the first caller takes every line with its count and the digest starts afresh.
//!
//! Times come from Redis `TIME`, so process clocks do not matter. Every key expires (the
//! state TTL), and a digest holds at most [`DIGEST_MAX_LINES`] distinct lines (the rest fold
//! into one), so nothing grows without bound. Keys share the hash tag `{<prefix>:alerts}`.

use std::time::Duration;

use leadq_platform::secret::Secret;

use crate::conn::{Client, Conn};
use crate::QueueError;

/// Distinct lines a digest holds; further fingerprints count into [`OTHER_FIELD`].
pub const DIGEST_MAX_LINES: usize = 50;
/// The digest line that counts fingerprints beyond [`DIGEST_MAX_LINES`].
pub const OTHER_FIELD: &str = "+other";

/// What [`AlertState::record`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Send it now: no process sent this fingerprint within the rate-limit window.
    Send,
    /// Sent lately (by any process): counted as a repeat in the digest.
    RateLimited,
    /// The first of its fingerprint in the current digest.
    Batched,
    /// Added to the count of a line already in the current digest.
    Deduplicated,
}

/// One line of a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestLine {
    /// The fingerprint (or [`OTHER_FIELD`]).
    pub fingerprint: String,
    /// Occurrences in the window.
    pub count: u64,
    /// Repeats of a fingerprint already sent as an immediate message.
    pub repeat: bool,
    /// The summary recorded with the line's first occurrence.
    pub summary: String,
}

/// The timing of alert state: all durations, so tests can use short ones.
#[derive(Debug, Clone, Copy)]
pub struct AlertTiming {
    /// One immediate message per fingerprint per this window.
    pub rate_limit: Duration,
    /// How long a digest gathers lines, from its first one.
    pub batch_window: Duration,
    /// Every key expires after this long without use.
    pub ttl: Duration,
}

/// A handle on the alert state of one key prefix. Cheap to clone (one multiplexed connection).
#[derive(Clone)]
pub struct AlertState {
    conn: Conn,
    tag: String,
    record: std::sync::Arc<redis::Script>,
    digest: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertState")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

impl AlertState {
    /// Connects (eagerly) to the Redis of `url` (a Cluster when `cluster`; TLS material
    /// `tls` for `rediss://`), keys under `{<prefix>:alerts}`.
    pub async fn connect(
        url: &Secret,
        prefix: &str,
        cluster: bool,
        tls: &leadq_platform::config::RedisTls,
    ) -> Result<Self, QueueError> {
        let client = Client::open(url, cluster, tls)?;
        client.check().await?;
        let conn = client.connect().await?;
        let state = Self {
            conn,
            tag: format!("{{{prefix}:alerts}}"),
            record: std::sync::Arc::new(redis::Script::new(include_str!("lua/alert_record.lua"))),
            digest: std::sync::Arc::new(redis::Script::new(include_str!("lua/alert_digest.lua"))),
        };
        let _: String = redis::cmd("PING")
            .query_async(&mut state.conn.clone())
            .await?;
        Ok(state)
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.tag)
    }

    /// Records one occurrence of `fingerprint` (see the module docs). `immediate`: it wants a
    /// message of its own now (a critical alert); otherwise it only goes into the digest.
    /// `summary` is kept with the digest line of its first occurrence.
    pub async fn record(
        &self,
        fingerprint: &str,
        immediate: bool,
        summary: &str,
        timing: AlertTiming,
    ) -> Result<Recorded, QueueError> {
        let reply: String = self
            .record
            .key(self.key(&format!("sent:{fingerprint}")))
            .key(self.key("digest:n"))
            .key(self.key("digest:line"))
            .key(self.key("digest:due"))
            .arg(fingerprint)
            .arg(if immediate { 1 } else { 0 })
            .arg(ms(timing.rate_limit))
            .arg(ms(timing.batch_window))
            .arg(ms(timing.ttl))
            .arg(summary)
            .arg(DIGEST_MAX_LINES)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match reply.as_str() {
            "send" => Ok(Recorded::Send),
            "rate_limited" => Ok(Recorded::RateLimited),
            "batched" => Ok(Recorded::Batched),
            "deduplicated" => Ok(Recorded::Deduplicated),
            other => Err(QueueError::Protocol(format!("alert record: {other:?}"))),
        }
    }

    /// The digest, if its window has passed: taken once, by the first caller, and cleared.
    /// Lines come most frequent first.
    pub async fn take_due_digest(&self) -> Result<Option<Vec<DigestLine>>, QueueError> {
        let flat: Vec<String> = self
            .digest
            .key(self.key("digest:n"))
            .key(self.key("digest:line"))
            .key(self.key("digest:due"))
            .invoke_async(&mut self.conn.clone())
            .await?;
        if flat.is_empty() {
            return Ok(None);
        }
        let mut lines: Vec<DigestLine> = flat
            .chunks(3)
            .filter(|c| c.len() == 3)
            .map(|c| {
                let (repeat, fingerprint) = match c[0].strip_prefix("r:") {
                    Some(fp) => (true, fp.to_owned()),
                    None => (false, c[0].clone()),
                };
                DigestLine {
                    fingerprint,
                    count: c[1].parse().unwrap_or(0),
                    repeat,
                    summary: c[2].clone(),
                }
            })
            .collect();
        lines.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        Ok(Some(lines))
    }
}
