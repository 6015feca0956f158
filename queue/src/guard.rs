//! Guards at the edge of the platform, kept in Redis so every API replica and worker shares
//! them: who acts across many tenants, which source addresses keep failing to authenticate,
//! and budgets per key (unauthenticated requests per address, webhook deliveries per tenant).
//!
//! Generic on purpose: it knows principals, subjects and windows, not tenants or HTTP. The
//! domain (`leadq_jobs::abuse`) and the API decide what is watched and what a crossing means.
//! Times come from Redis `TIME` (budgets, sightings), so process clocks do not matter. Every
//! key expires, and a principal's window holds at most [`SIGHTING_CAP`] subjects, so nothing
//! grows without bound, whatever an attacker invents. Each principal's keys share one hash tag
//! (`{<prefix>:guard:<watch>:<principal>}`), so every script touches one Cluster slot.

use std::time::Duration;

use crate::{Queue, QueueError};

/// Subjects one principal's window keeps at most (the oldest go first).
pub const SIGHTING_CAP: usize = 1_000;

/// What [`Queue::sighting`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// Distinct subjects the principal touched within the window (at most [`SIGHTING_CAP`]).
    pub distinct: u64,
    /// This sighting crossed the threshold, and no other did within the window: raise it now.
    pub raised: bool,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

impl Queue {
    fn guard_key(&self, watch: &str, principal: &str, suffix: &str) -> String {
        format!(
            "{{{}:guard:{watch}:{principal}}}:{suffix}",
            self.settings().prefix
        )
    }

    /// Records that `principal` acted on (or was refused for) `subject` under `watch`, and
    /// whether the distinct subjects in the last `window` reached `threshold`. The crossing is
    /// reported once per window per principal, however many processes see it.
    pub async fn sighting(
        &self,
        watch: &str,
        principal: &str,
        subject: &str,
        window: Duration,
        threshold: u32,
    ) -> Result<Sighting, QueueError> {
        let (distinct, raised): (u64, i64) = self
            .scripts()
            .guard_sighting
            .key(self.guard_key(watch, principal, "seen"))
            .key(self.guard_key(watch, principal, "raised"))
            .arg(subject)
            .arg(ms(window))
            .arg(threshold.max(1))
            .arg(SIGHTING_CAP)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Sighting {
            distinct,
            raised: raised == 1,
        })
    }

    /// Counts one failure of `source` under `watch`; the failure that reaches `limit` within
    /// `window` locks the source out for `lockout`. Returns the time left on the lockout
    /// (zero: not locked out).
    pub async fn strike(
        &self,
        watch: &str,
        source: &str,
        limit: u32,
        window: Duration,
        lockout: Duration,
    ) -> Result<Duration, QueueError> {
        let left: u64 = self
            .scripts()
            .guard_strike
            .key(self.guard_key(watch, source, "strikes"))
            .key(self.guard_key(watch, source, "locked"))
            .arg(limit.max(1))
            .arg(ms(window))
            .arg(ms(lockout))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Duration::from_millis(left))
    }

    /// The time left on `source`'s lockout under `watch` (zero: not locked out). One `PTTL`.
    pub async fn locked_out(&self, watch: &str, source: &str) -> Result<Duration, QueueError> {
        let left: i64 = redis::cmd("PTTL")
            .arg(self.guard_key(watch, source, "locked"))
            .query_async(&mut self.conn())
            .await?;
        Ok(Duration::from_millis(left.max(0) as u64))
    }

    /// Takes one unit of `key`'s budget under `watch` (`per_second`, with `burst`). `Ok(None)`:
    /// within budget; `Ok(Some(wait))`: over it, nothing taken, the budget has room again
    /// after `wait`.
    pub async fn take_budget(
        &self,
        watch: &str,
        key: &str,
        per_second: u32,
        burst: u32,
    ) -> Result<Option<Duration>, QueueError> {
        let (ok, retry_ms): (i64, u64) = self
            .scripts()
            .guard_budget
            .key(self.guard_key(watch, key, "gcra"))
            .arg(per_second.max(1))
            .arg(burst.max(1))
            .invoke_async(&mut self.conn())
            .await?;
        Ok((ok != 1).then(|| Duration::from_millis(retry_ms.max(1))))
    }
}
