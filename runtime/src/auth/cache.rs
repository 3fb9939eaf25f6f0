//! A bounded map whose entries expire: the authentication and authorization
//! decisions of the last few seconds, so that a scrape every 15 s by a few
//! scrapers costs the API server two reviews per TTL and not two per
//! request, while a flood of distinct tokens cannot grow memory.
//!
//! Small and specific (expiry checked against a time passed in, eviction of
//! the soonest-expiring entry when full) rather than a general LRU crate: it
//! holds a few entries, and the time as an argument keeps it testable.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// At most `capacity` entries, each valid for `ttl` after it was stored.
#[derive(Debug)]
pub struct DecisionCache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    capacity: usize,
    ttl: Duration,
}

impl<K: Eq + Hash + Clone, V: Clone> DecisionCache<K, V> {
    /// A capacity of 0 or a zero TTL caches nothing.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            ttl,
        }
    }

    /// The value stored for `key`, unless it expired by `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(expires, _)| now < *expires)
            .map(|(_, value)| value.clone())
    }

    /// Stores `value` until `now + ttl`. When full, expired entries go first,
    /// then the one that would expire soonest.
    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.capacity == 0 || self.ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (expires, _)| now < *expires);
            if self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (expires, _))| *expires)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        self.entries.insert(key, (now + self.ttl, value));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn an_entry_lives_for_the_ttl() {
        let start = Instant::now();
        let mut cache = DecisionCache::new(4, TTL);
        cache.insert("a", 1, start);
        assert_eq!(cache.get(&"a", start + Duration::from_secs(9)), Some(1));
        assert_eq!(cache.get(&"a", start + TTL), None);
        assert_eq!(cache.get(&"b", start), None);
    }

    #[test]
    fn a_full_cache_drops_expired_then_the_soonest_to_expire() {
        let start = Instant::now();
        let mut cache = DecisionCache::new(2, TTL);
        cache.insert("old", 1, start);
        cache.insert("newer", 2, start + Duration::from_secs(5));
        // "old" expired by now: it goes, "newer" stays.
        let later = start + Duration::from_secs(11);
        cache.insert("third", 3, later);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"newer", later), Some(2));
        // Nothing expired: the soonest to expire ("newer") goes.
        cache.insert("fourth", 4, later);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"newer", later), None);
        assert_eq!(cache.get(&"third", later), Some(3));
        assert_eq!(cache.get(&"fourth", later), Some(4));
    }

    #[test]
    fn many_distinct_keys_never_exceed_the_capacity() {
        let start = Instant::now();
        let mut cache = DecisionCache::new(64, TTL);
        for i in 0..10_000 {
            cache.insert(i, i, start);
        }
        assert_eq!(cache.len(), 64);
    }

    #[test]
    fn replacing_a_key_in_a_full_cache_evicts_nothing() {
        let start = Instant::now();
        let mut cache = DecisionCache::new(2, TTL);
        cache.insert("a", 1, start);
        cache.insert("b", 2, start);
        cache.insert("a", 3, start);
        assert_eq!(cache.get(&"a", start), Some(3));
        assert_eq!(cache.get(&"b", start), Some(2));
    }

    #[test]
    fn zero_capacity_or_ttl_caches_nothing() {
        let start = Instant::now();
        let mut cache = DecisionCache::new(0, TTL);
        cache.insert("a", 1, start);
        assert!(cache.is_empty());
        let mut cache = DecisionCache::new(4, Duration::ZERO);
        cache.insert("a", 1, start);
        assert!(cache.is_empty());
    }
}
