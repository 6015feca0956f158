//! What authorization read, kept for [`TTL`] and dropped the moment it changes.
//!
//! Authorization reads the tenant, its entitlement to the kind and the principal for every
//! job: one PostgreSQL transaction per job, for facts that change a few times a year. The
//! worker keeps each answer (by tenant, kind and principal) for [`TTL`]. A change to any row
//! the answer came from (`tenants`, `api_keys`, `tenant_job_kinds`, `tenant_integrations`,
//! `operators`) fires a trigger (`migrations/*_authz_invalidation.sql`) whose `NOTIFY` every
//! worker receives on a `LISTEN` connection of its own ([`AuthzCache::follow`]); the tenant's
//! answers are dropped at once (an operator's change drops them all).
//!
//! The bound, stated: a revoked key, a suspended tenant, a withdrawn entitlement or a
//! disabled operator is refused from the first job that starts after the notification
//! arrives, normally milliseconds after the change commits. If the notification is lost (the
//! listening connection broke, PostgreSQL restarted), the cache is cleared when the listener
//! reconnects, and in every case no answer is used for longer than [`TTL`] after it was read.
//! A read that raced a notification is not kept (see [`leadq_platform::ttl`]).
//!
//! An answer that is missing is read once, not once per job that asks: the jobs that miss
//! the same key take turns ([`AuthzCache::turn`]), and those after the first find it kept.
//! A worker runs 256 `lead_score` jobs at once; without turns, every answer that expired
//! (they all do, [`TTL`] after they were read) was read again by every job of its tenant in
//! flight, each on a connection of the pool the jobs' writes need.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};

use leadq_platform::changes::{self, Change};
use leadq_platform::ttl::{Reading, TtlCache};
use sqlx::PgPool;
use uuid::Uuid;

use super::Facts;

/// How long an answer is used at most.
pub const TTL: Duration = Duration::from_secs(2);
/// Answers kept at most (tenants × kinds × principals in use within [`TTL`]).
const MAX_ENTRIES: usize = 50_000;

/// Locks the lookups take turns on (a key's turn is the lock its hash picks): enough that
/// unrelated keys rarely share one.
const TURNS: usize = 64;

/// (tenant, kind, principal).
type Key = (Uuid, String, String);

/// The worker's cache of authorization facts. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct AuthzCache {
    facts: TtlCache<Key, Option<Facts>>,
    turns: Arc<[Mutex<()>]>,
}

impl Default for AuthzCache {
    fn default() -> Self {
        Self::with_ttl(TTL)
    }
}

impl AuthzCache {
    /// A cache whose answers are used for `ttl` (tests shorten it).
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            facts: TtlCache::new(ttl, MAX_ENTRIES),
            turns: (0..TURNS).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Waits for the turn to look up this key: held while one job reads and keeps the
    /// answer, so the others look in the cache again when they get it.
    pub(super) async fn turn(
        &self,
        tenant: Uuid,
        kind: &str,
        principal: &str,
    ) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        (tenant, kind, principal).hash(&mut h);
        self.turns[(h.finish() % TURNS as u64) as usize]
            .lock()
            .await
    }

    pub(super) fn get(&self, tenant: Uuid, kind: &str, principal: &str) -> Option<Option<Facts>> {
        self.facts
            .get(&(tenant, kind.to_owned(), principal.to_owned()))
    }

    pub(super) fn reading(&self) -> Reading {
        self.facts.reading()
    }

    pub(super) fn insert(
        &self,
        tenant: Uuid,
        kind: &str,
        principal: &str,
        facts: Option<Facts>,
        reading: Reading,
    ) {
        let key = (tenant, kind.to_owned(), principal.to_owned());
        self.facts.insert(key, facts, reading);
    }

    /// Drops what a change notified with `payload` (a tenant id, or `*`) may have made stale.
    pub fn invalidate(&self, payload: &str) {
        self.drop_changed(Change::of(payload));
    }

    fn drop_changed(&self, change: Change) {
        self.facts.forget(|(t, _, _)| change.concerns(*t));
    }

    /// Answers kept now.
    pub fn len(&self) -> usize {
        self.facts.len()
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// Listens for invalidations until the task is dropped ([`changes::follow`]).
    pub async fn follow(self, pool: PgPool) {
        changes::follow(pool, move |change| self.drop_changed(change)).await;
    }
}
