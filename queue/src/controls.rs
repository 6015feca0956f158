//! Per-tenant controls of the engine: a tenant's weight, pause and resume, its concurrency
//! cap (all per kind, applied in `lua/tenant.lua` and honoured by the fetch script), and
//! ingest admission (rate limit and daily quota, decided in Redis so every API instance
//! shares them).
//!
//! The limits themselves are the domain's (`leadq_jobs::ops::limits`, stored in PostgreSQL);
//! this module only applies them, atomically, in `lua/admit.lua`. The key tag is spelled once,
//! in [`crate::keys`](self).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Timelike, Utc};
use uuid::Uuid;

use crate::keys::AdmitKeys;
use crate::{Queue, QueueError, TenantControl, TenantState};

/// What a tenant may ingest: a sustained rate with a burst above it, and a daily count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmitLimits {
    /// Sustained requests per second (positive).
    pub per_second: i32,
    /// Requests allowed at once above the rate (positive).
    pub burst: i32,
    /// Admissions per UTC day (positive).
    pub per_day: i32,
}

/// The answer of an admission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Admitted,
    /// Too fast: retry after the delay.
    RateLimited(Duration),
    /// Today's quota is used up: retry after the delay (the next UTC day).
    QuotaExceeded(Duration),
}

impl Queue {
    /// Sets a tenant's share of `kind`'s workers relative to other tenants with ready jobs
    /// (default 1; a tenant of weight 2 is served twice as often as one of weight 1 while both
    /// have work waiting).
    pub async fn set_tenant_weight(
        &self,
        kind: &str,
        tenant: Uuid,
        weight: f64,
    ) -> Result<(), QueueError> {
        if !(weight.is_finite() && (0.01..=1000.0).contains(&weight)) {
            return Err(QueueError::Invalid("weight must be 0.01-1000".into()));
        }
        let _: i64 = redis::cmd("HSET")
            .arg(&self.keys(kind, self.shard_of(&tenant)).fair)
            .arg(format!("w:{tenant}"))
            .arg(weight)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Pauses `kind` for one tenant: none of its jobs start (running ones finish) until
    /// [`Queue::resume_tenant`]. Its jobs are still accepted and kept in order; other tenants
    /// are unaffected.
    pub async fn pause_tenant(
        &self,
        kind: &str,
        tenant: Uuid,
    ) -> Result<TenantControl, QueueError> {
        self.tenant_control(kind, tenant, "pause", 0).await
    }

    /// Resumes a paused tenant: its held jobs re-enter the queue behind its other work.
    pub async fn resume_tenant(
        &self,
        kind: &str,
        tenant: Uuid,
    ) -> Result<TenantControl, QueueError> {
        self.tenant_control(kind, tenant, "resume", 0).await
    }

    /// Caps how many of `tenant`'s jobs of `kind` run at once across all workers (`None`
    /// removes the cap). Jobs over the cap wait, in order, and start as the tenant's running
    /// jobs finish; the slots they leave go to other tenants.
    pub async fn set_tenant_cap(
        &self,
        kind: &str,
        tenant: Uuid,
        cap: Option<u32>,
    ) -> Result<TenantControl, QueueError> {
        if cap == Some(0) {
            return Err(QueueError::Invalid("a cap must be at least 1".into()));
        }
        self.tenant_control(kind, tenant, "cap", cap.unwrap_or(0))
            .await
    }

    /// A tenant's controls and standing in `kind`'s queue (see [`Queue::tenant_states`]).
    pub async fn tenant_state(&self, kind: &str, tenant: Uuid) -> Result<TenantState, QueueError> {
        self.tenant_states(kind, &[tenant])
            .await?
            .pop()
            .ok_or_else(|| QueueError::Protocol("tenant state missing".into()))
    }

    /// The controls and standing of each of `tenants` in `kind`'s queue, in order (a tenant
    /// given twice is answered twice). One pipelined round trip per shard holding some of
    /// them (a console listing many tenants does not pay one round trip each).
    pub async fn tenant_states(
        &self,
        kind: &str,
        tenants: &[Uuid],
    ) -> Result<Vec<TenantState>, QueueError> {
        let mut by_shard: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, t) in tenants.iter().enumerate() {
            by_shard.entry(self.shard_of(t)).or_default().push(i);
        }
        let mut out: Vec<Option<TenantState>> = vec![None; tenants.len()];
        for (shard, positions) in by_shard {
            let k = self.keys(kind, shard);
            let mut pipe = redis::pipe();
            for &i in &positions {
                let tenant = tenants[i];
                pipe.cmd("HMGET")
                    .arg(&k.fair)
                    .arg(format!("p:{tenant}"))
                    .arg(format!("c:{tenant}"))
                    .arg(format!("r:{tenant}"))
                    .arg(format!("w:{tenant}"));
                // `<tenant>|…` up to (not including) `<tenant>}`: `}` sorts right after `|`.
                for key in [&k.parked, &k.index] {
                    pipe.cmd("ZLEXCOUNT")
                        .arg(key)
                        .arg(format!("[{tenant}|"))
                        .arg(format!("({tenant}}}"));
                }
            }
            type Fields = (Option<String>, Option<u32>, Option<u64>, Option<f64>);
            let replies: Vec<(Fields, u64, u64)> = pipe.query_async(&mut self.conn()).await?;
            if replies.len() != positions.len() {
                return Err(QueueError::Protocol("tenant state reply length".into()));
            }
            for (i, ((paused, cap, running, weight), held, backlog)) in
                positions.into_iter().zip(replies)
            {
                out[i] = Some(TenantState {
                    paused: paused.is_some(),
                    cap,
                    running: if cap.is_some() {
                        running.unwrap_or(0)
                    } else {
                        0
                    },
                    held,
                    backlog,
                    weight: weight.unwrap_or(1.0),
                });
            }
        }
        out.into_iter()
            .map(|s| s.ok_or_else(|| QueueError::Protocol("tenant state missing".into())))
            .collect()
    }

    /// Runs `lua/tenant.lua`, in bounded slices until nothing more can move.
    async fn tenant_control(
        &self,
        kind: &str,
        tenant: Uuid,
        action: &str,
        cap: u32,
    ) -> Result<TenantControl, QueueError> {
        const SLICE: u64 = 1000;
        let k = self.keys(kind, self.shard_of(&tenant));
        let mut conn = self.conn();
        let mut action = action;
        let mut resumed = 0;
        loop {
            let (moved, held): (u64, u64) = self
                .inner
                .scripts
                .tenant
                .key(&k.ready)
                .key(&k.jobs)
                .key(&k.leases)
                .key(&k.wake)
                .key(&k.fair)
                .key(&k.index)
                .key(&k.parked)
                .arg(tenant.to_string())
                .arg(action)
                .arg(cap)
                .arg(SLICE)
                .invoke_async(&mut conn)
                .await?;
            resumed += moved;
            if moved < SLICE {
                if resumed > 0 && k.tag != self.keys(kind, 0).tag {
                    self.wake(kind).await?;
                }
                return Ok(TenantControl { resumed, held });
            }
            // A full slice moved: carry on with the rest, without re-counting leases, and
            // without undoing a pause another operator makes between two slices.
            action = "more";
        }
    }

    /// Admits one request of `tenant` under `limits`, atomically in Redis. A refused request
    /// consumes nothing.
    pub async fn admit(&self, tenant: Uuid, limits: &AdmitLimits) -> Result<Admission, QueueError> {
        let now = Utc::now();
        let ms_left_today = (86_400 - now.num_seconds_from_midnight() as u64) * 1000;
        let day = now.format("%Y%m%d").to_string();
        let keys = AdmitKeys::new(&self.settings().prefix, &tenant, &day);
        let (ok, retry_ms, why): (i64, u64, String) = self
            .scripts()
            .admit
            .key(keys.gcra)
            .key(keys.leads_today)
            .arg(limits.per_second)
            .arg(limits.burst)
            .arg(limits.per_day)
            .arg(ms_left_today)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(admission(ok, retry_ms, &why))
    }
}

/// Reads the script's answer `{ok, retry_after_ms, why}`.
fn admission(ok: i64, retry_ms: u64, why: &str) -> Admission {
    match (ok, why) {
        (1, _) => Admission::Admitted,
        (_, "quota") => Admission::QuotaExceeded(Duration::from_millis(retry_ms)),
        _ => Admission::RateLimited(Duration::from_millis(retry_ms.max(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admission_script_reply_is_read_back() {
        assert_eq!(admission(1, 0, "ok"), Admission::Admitted);
        assert_eq!(
            admission(0, 86_000, "quota"),
            Admission::QuotaExceeded(Duration::from_millis(86_000))
        );
        assert_eq!(
            admission(0, 250, "rate"),
            Admission::RateLimited(Duration::from_millis(250))
        );
        // A rate limit never says "retry in 0 ms" (a client would spin).
        assert_eq!(
            admission(0, 0, "rate"),
            Admission::RateLimited(Duration::from_millis(1))
        );
    }
}
