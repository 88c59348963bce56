//! Verified tokens, remembered until they expire, so a busy agent pays for one signature
//! check per token rather than one per request.
//!
//! Keyed by the token itself, like Envoy's own `jwt_authn` cache. An earlier version keyed
//! by the token's SHA-256 so that entries had a fixed size; profiling showed that digest
//! was a third of the filter's work on every request (pure-Rust SHA-256 in the Wasm VM).
//! The map's hasher is SipHash with a per-VM random key, so lookups with attacker-chosen
//! tokens cannot be steered into collisions, and a hit still needs the whole token to be
//! equal. Memory is bounded twice: by `cache_entries` and by `MAX_CACHED_TOKEN_BYTES`.
//!
//! Eviction, when an insert finds the cache full: drop every expired entry; if that
//! frees nothing, drop the older half by insertion order. Both are O(n) but run at most
//! once per n/2 inserts, so inserts stay amortised O(1).

use std::collections::HashMap;
use std::rc::Rc;

use super::claims::Validity;
use crate::identity::Identity;

/// Token bytes a cache may hold, whatever `cache_entries` says: 10,000 typical 1 KiB
/// tokens fit; 16 KiB tokens cannot make one worker's cache grow past this.
pub(crate) const MAX_CACHED_TOKEN_BYTES: usize = 16 * 1024 * 1024;

struct Entry {
    identity: Rc<Identity>,
    validity: Validity,
    /// Insertion order, for "drop the older half".
    seq: u64,
}

pub(crate) struct TokenCache {
    map: HashMap<Box<str>, Entry>,
    capacity: usize,
    max_bytes: usize,
    /// Sum of the cached tokens' lengths.
    bytes: usize,
    next_seq: u64,
}

impl TokenCache {
    /// `capacity` is at least 1 (a zero capacity is treated as 1).
    pub(crate) fn new(capacity: usize) -> TokenCache {
        TokenCache::with_byte_limit(capacity, MAX_CACHED_TOKEN_BYTES)
    }

    fn with_byte_limit(capacity: usize, max_bytes: usize) -> TokenCache {
        TokenCache { map: HashMap::new(), capacity: capacity.max(1), max_bytes, bytes: 0, next_seq: 0 }
    }

    pub(crate) fn get(&self, token: &str) -> Option<(&Rc<Identity>, Validity)> {
        self.map.get(token).map(|e| (&e.identity, e.validity))
    }

    pub(crate) fn remove(&mut self, token: &str) {
        if let Some((key, _)) = self.map.remove_entry(token) {
            self.bytes -= key.len();
        }
    }

    /// Inserts, evicting first if full. `is_live` says whether an entry is still valid now.
    pub(crate) fn insert(
        &mut self,
        token: &str,
        identity: Rc<Identity>,
        validity: Validity,
        is_live: impl Fn(Validity) -> bool,
    ) {
        self.remove(token);
        if self.is_full_for(token.len()) {
            self.map.retain(|_, e| is_live(e.validity));
            self.recount();
            if self.is_full_for(token.len()) {
                self.drop_older_half();
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.bytes += token.len();
        self.map.insert(token.into(), Entry { identity, validity, seq });
    }

    fn is_full_for(&self, extra_bytes: usize) -> bool {
        self.map.len() >= self.capacity || self.bytes + extra_bytes > self.max_bytes
    }

    fn drop_older_half(&mut self) {
        let mut seqs: Vec<u64> = self.map.values().map(|e| e.seq).collect();
        if seqs.is_empty() {
            return;
        }
        let remove = (seqs.len() / 2).max(1);
        let (_, &mut cutoff, _) = seqs.select_nth_unstable(remove - 1);
        self.map.retain(|_, e| e.seq > cutoff);
        self.recount();
    }

    fn recount(&mut self) {
        self.bytes = self.map.keys().map(|k| k.len()).sum();
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn identity(n: usize) -> Rc<Identity> {
        Rc::new(Identity::new(format!("user-{n}"), vec![], 100))
    }

    fn live_until(exp: u64) -> Validity {
        Validity { exp, nbf: None }
    }

    #[test]
    fn full_cache_drops_expired_entries_before_live_ones() {
        let mut cache = TokenCache::new(4);
        for i in 0..4 {
            let exp = if i % 2 == 0 { 10 } else { 1000 };
            cache.insert(&format!("t{i}"), identity(i), live_until(exp), |_| true);
        }
        cache.insert("t4", identity(4), live_until(1000), |v| v.exp > 500);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("t0").is_none());
        assert!(cache.get("t1").is_some());
        assert!(cache.get("t4").is_some());
    }

    #[test]
    fn full_cache_of_live_entries_drops_the_older_half() {
        let mut cache = TokenCache::new(10);
        for i in 0..10 {
            cache.insert(&format!("t{i}"), identity(i), live_until(1000), |_| true);
        }
        cache.insert("new", identity(99), live_until(1000), |_| true);
        assert_eq!(cache.len(), 6);
        for i in 0..5 {
            assert!(cache.get(&format!("t{i}")).is_none(), "t{i} should be gone");
        }
        for i in 5..10 {
            assert!(cache.get(&format!("t{i}")).is_some(), "t{i} should stay");
        }
    }

    #[test]
    fn capacity_one_still_replaces_its_entry() {
        let mut cache = TokenCache::new(0);
        cache.insert("a", identity(1), live_until(1000), |_| true);
        cache.insert("b", identity(2), live_until(1000), |_| true);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("b").map(|(i, _)| i.subject.as_str()), Some("user-2"));
    }

    #[test]
    fn cache_of_big_tokens_stays_within_its_byte_budget() {
        let mut cache = TokenCache::with_byte_limit(1000, 10 * 1024);
        for i in 0..50 {
            let token = format!("{i:04}{}", "x".repeat(1020));
            cache.insert(&token, identity(i), live_until(1000), |_| true);
            assert!(cache.bytes <= 10 * 1024, "{} bytes after {i}", cache.bytes);
            assert!(cache.get(&token).is_some(), "the newest token is always kept");
        }
        assert!(cache.len() >= 5);
    }

    #[test]
    fn reinserting_a_token_does_not_count_its_bytes_twice() {
        let mut cache = TokenCache::new(4);
        cache.insert("a.b.c", identity(1), live_until(1000), |_| true);
        cache.insert("a.b.c", identity(2), live_until(1000), |_| true);
        assert_eq!((cache.len(), cache.bytes), (1, 5));
        cache.remove("a.b.c");
        assert_eq!((cache.len(), cache.bytes), (0, 0));
    }
}
