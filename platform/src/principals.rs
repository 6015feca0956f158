//! Authenticated API keys, kept for [`TTL`] and dropped the moment they change.
//!
//! Every request authenticates its key: a PostgreSQL transaction of four statements for a fact
//! that changes a few times a year, a fifth of what an accepted lead cost PostgreSQL
//! (docs/bench/lead-path.md). The API keeps each key that authenticated, by the SHA-256 of the presented
//! key (never the key itself), for [`TTL`]. Only successes are kept: a refused key is looked up
//! again every time, so a key created a moment ago works at once and a stream of wrong keys
//! fills nothing.
//!
//! The bound, stated: a revoked or deleted key, a suspended tenant or a changed scope is
//! refused from the first request after the change's notification arrives
//! ([`crate::changes`]), normally milliseconds after it commits; if notifications are lost, no
//! answer is used for longer than [`TTL`] after it was read. An expired key is refused from its
//! expiry on, cached or not. A read that raced a notification is not kept
//! ([`crate::ttl::Reading`]). `last_used_at` is written on a miss, so at least once per
//! [`TTL`] of use (it promises a minute).

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use crate::apikey;
use crate::changes::Change;
use crate::tenant::{self, AuthFailure, Principal};
use crate::ttl::TtlCache;

/// How long an authenticated key is used at most without reading it again.
pub const TTL: Duration = Duration::from_secs(2);
/// Keys kept at most (the keys in use within [`TTL`]).
const MAX_KEYS: usize = 10_000;

/// The API's cache of authenticated keys. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct KeyCache(TtlCache<Vec<u8>, Principal>);

impl Default for KeyCache {
    fn default() -> Self {
        Self::with_ttl(TTL)
    }
}

impl KeyCache {
    /// A cache whose answers are used for `ttl` (tests shorten it).
    pub fn with_ttl(ttl: Duration) -> Self {
        Self(TtlCache::new(ttl, MAX_KEYS))
    }

    /// [`tenant::authenticate`], answered from the cache when the key authenticated within
    /// [`TTL`] and nothing about its tenant changed since.
    pub async fn authenticate(
        &self,
        pool: &PgPool,
        presented: &str,
    ) -> Result<Result<Principal, AuthFailure>, sqlx::Error> {
        let key = apikey::hash(presented);
        if let Some(p) = self.0.get(&key) {
            if p.expires_at.is_some_and(|e| e <= Utc::now()) {
                return Ok(Err(AuthFailure::Expired));
            }
            return Ok(Ok(p));
        }
        let reading = self.0.reading();
        let answer = tenant::authenticate(pool, presented).await?;
        if let Ok(p) = &answer {
            self.0.insert(key, p.clone(), reading);
        }
        Ok(answer)
    }

    /// Drops what `change` may have made stale.
    pub fn drop_changed(&self, change: Change) {
        self.0.forget_entries(|_, p| change.concerns(p.tenant_id));
    }

    /// Keys kept now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
