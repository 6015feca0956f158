//! A small map whose entries are used for a fixed time: the short-lived caches that spare the
//! hot paths a database round trip per request or per job (webhook settings in the API, the
//! authorization facts in the worker).
//!
//! Bounded: at `max` entries the expired ones are dropped, and if none has expired a new
//! entry is simply not kept (the caller read it anyway). Hand-written rather than a cache
//! crate because this is all the behaviour needed: no eviction order to tune, no background
//! thread, and `forget` for explicit invalidation.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Entries of `V` by `K`, each used for `ttl` after it was read. Cheap to clone (shared).
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    entries: Arc<RwLock<HashMap<K, (Instant, V)>>>,
    /// Bumped by every invalidation; a read begun before one is not kept.
    epoch: Arc<AtomicU64>,
}

/// Taken before reading what will be cached: when, and which invalidations it has seen.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    at: Instant,
    epoch: u64,
}

impl<K, V> Clone for TtlCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            ttl: self.ttl,
            max: self.max,
            entries: self.entries.clone(),
            epoch: self.epoch.clone(),
        }
    }
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// Entries used for `ttl`, at most `max` kept.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Arc::default(),
            epoch: Arc::default(),
        }
    }

    /// The entry for `key`, if it is younger than the TTL.
    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.entries.read().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// Call before reading a value to [`TtlCache::insert`].
    pub fn reading(&self) -> Reading {
        Reading {
            at: Instant::now(),
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    /// Keeps `value` for `key`, read since `reading`; its TTL runs from the reading. Not kept
    /// if an invalidation ([`TtlCache::forget`], [`TtlCache::clear`]) came in between: the
    /// read may have seen the state before the change, and would outlive the invalidation.
    pub fn insert(&self, key: K, value: V, reading: Reading) {
        let Ok(mut map) = self.entries.write() else {
            return;
        };
        // Checked under the write lock, which every invalidation also takes.
        if self.epoch.load(Ordering::Acquire) != reading.epoch {
            return;
        }
        if map.len() >= self.max {
            map.retain(|_, (at, _)| at.elapsed() < self.ttl);
        }
        if map.len() < self.max {
            map.insert(key, (reading.at, value));
        }
    }

    /// Drops every entry `stale` picks by its key; returns how many.
    pub fn forget(&self, stale: impl Fn(&K) -> bool) -> usize {
        self.forget_entries(|k, _| stale(k))
    }

    /// Drops every entry `stale` picks by its key and value; returns how many.
    pub fn forget_entries(&self, stale: impl Fn(&K, &V) -> bool) -> usize {
        let Ok(mut map) = self.entries.write() else {
            return 0;
        };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let before = map.len();
        map.retain(|k, (_, v)| !stale(k, v));
        before - map.len()
    }

    /// Drops every entry.
    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.write() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            map.clear();
        }
    }

    /// How many entries are kept (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.entries.read().map_or(0, |m| m.len())
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_used_until_its_ttl() {
        let c = TtlCache::new(Duration::from_millis(50), 10);
        c.insert("a", 1, c.reading());
        assert_eq!(c.get(&"a"), Some(1));
        let early = c.reading();
        std::thread::sleep(Duration::from_millis(60));
        c.insert("b", 2, early);
        assert_eq!(c.get(&"b"), None, "the TTL runs from the reading");
    }

    #[test]
    fn at_the_bound_expired_entries_go_and_new_ones_are_not_kept() {
        let c = TtlCache::new(Duration::from_secs(60), 2);
        for k in 1..=3 {
            c.insert(k, (), c.reading());
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&3), None);
        let old = TtlCache::new(Duration::from_millis(10), 2);
        old.insert(1, (), old.reading());
        old.insert(2, (), old.reading());
        std::thread::sleep(Duration::from_millis(20));
        old.insert(3, (), old.reading());
        assert_eq!(old.len(), 1);
        assert_eq!(old.get(&3), Some(()));
    }

    #[test]
    fn forget_drops_what_the_predicate_picks() {
        let c = TtlCache::new(Duration::from_secs(60), 10);
        for k in 0..6 {
            c.insert(k, k, c.reading());
        }
        assert_eq!(c.forget(|k| k % 2 == 0), 3);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&3), Some(3));
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_kept() {
        let c = TtlCache::new(Duration::from_secs(60), 10);
        let reading = c.reading();
        c.forget(|_: &u8| true); // the change lands while the read is in flight
        c.insert(1, "stale", reading);
        assert_eq!(c.get(&1), None);
        c.insert(1, "fresh", c.reading());
        assert_eq!(c.get(&1), Some("fresh"));
    }
}
