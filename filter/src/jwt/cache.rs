//! Verified tokens, remembered until they expire, so a busy agent pays for one signature
//! check per token rather than one per request.
//!
//! Keyed by the SHA-256 of the token: memory per entry is fixed whatever the token size,
//! and the token itself is not kept. Only tokens that passed full verification are ever
//! inserted, so the keys are not attacker-chosen and a plain hasher over the digest's
//! first bytes is safe (and needs no random seed in the Wasm VM).
//!
//! Eviction, when an insert finds the cache full: drop every expired entry; if that
//! frees nothing, drop the older half by insertion order. Both are O(n) but run at most
//! once per n/2 inserts, so inserts stay amortised O(1).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::rc::Rc;

use super::claims::Validity;
use crate::identity::Identity;

/// SHA-256 of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub(crate) fn of(token: &str) -> TokenDigest {
        TokenDigest(hmac_sha256::Hash::hash(token.as_bytes()))
    }
}

impl Hash for TokenDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]));
    }
}

/// Passes a digest's 64 bits through: they are already uniformly distributed.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Not used by `TokenDigest`; a simple mix so the hasher stays correct for any input.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

struct Entry {
    identity: Rc<Identity>,
    validity: Validity,
    /// Insertion order, for "drop the older half".
    seq: u64,
}

pub(crate) struct TokenCache {
    map: HashMap<TokenDigest, Entry, BuildHasherDefault<DigestHasher>>,
    capacity: usize,
    next_seq: u64,
}

impl TokenCache {
    /// `capacity` is at least 1 (a zero capacity is treated as 1).
    pub(crate) fn new(capacity: usize) -> TokenCache {
        TokenCache { map: HashMap::default(), capacity: capacity.max(1), next_seq: 0 }
    }

    pub(crate) fn get(&self, digest: &TokenDigest) -> Option<(&Rc<Identity>, Validity)> {
        self.map.get(digest).map(|e| (&e.identity, e.validity))
    }

    pub(crate) fn remove(&mut self, digest: &TokenDigest) {
        self.map.remove(digest);
    }

    /// Inserts, evicting first if full. `is_live` says whether an entry is still valid now.
    pub(crate) fn insert(
        &mut self,
        digest: TokenDigest,
        identity: Rc<Identity>,
        validity: Validity,
        is_live: impl Fn(Validity) -> bool,
    ) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&digest) {
            self.map.retain(|_, e| is_live(e.validity));
            if self.map.len() >= self.capacity {
                self.drop_older_half();
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.map.insert(digest, Entry { identity, validity, seq });
    }

    fn drop_older_half(&mut self) {
        let mut seqs: Vec<u64> = self.map.values().map(|e| e.seq).collect();
        let remove = (seqs.len() / 2).max(1);
        let (_, &mut cutoff, _) = seqs.select_nth_unstable(remove - 1);
        self.map.retain(|_, e| e.seq > cutoff);
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
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
        Rc::new(Identity { subject: format!("user-{n}"), groups: vec![], expires_at: 100 })
    }

    fn live_until(exp: u64) -> Validity {
        Validity { exp, nbf: None }
    }

    #[test]
    fn full_cache_drops_expired_entries_before_live_ones() {
        let mut cache = TokenCache::new(4);
        for i in 0..4 {
            let exp = if i % 2 == 0 { 10 } else { 1000 };
            cache.insert(TokenDigest::of(&format!("t{i}")), identity(i), live_until(exp), |_| true);
        }
        cache.insert(TokenDigest::of("t4"), identity(4), live_until(1000), |v| v.exp > 500);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&TokenDigest::of("t0")).is_none());
        assert!(cache.get(&TokenDigest::of("t1")).is_some());
        assert!(cache.get(&TokenDigest::of("t4")).is_some());
    }

    #[test]
    fn full_cache_of_live_entries_drops_the_older_half() {
        let mut cache = TokenCache::new(10);
        for i in 0..10 {
            cache.insert(TokenDigest::of(&format!("t{i}")), identity(i), live_until(1000), |_| true);
        }
        cache.insert(TokenDigest::of("new"), identity(99), live_until(1000), |_| true);
        assert_eq!(cache.len(), 6);
        for i in 0..5 {
            assert!(cache.get(&TokenDigest::of(&format!("t{i}"))).is_none(), "t{i} should be gone");
        }
        for i in 5..10 {
            assert!(cache.get(&TokenDigest::of(&format!("t{i}"))).is_some(), "t{i} should stay");
        }
    }

    #[test]
    fn capacity_one_still_replaces_its_entry() {
        let mut cache = TokenCache::new(0);
        cache.insert(TokenDigest::of("a"), identity(1), live_until(1000), |_| true);
        cache.insert(TokenDigest::of("b"), identity(2), live_until(1000), |_| true);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&TokenDigest::of("b")).map(|(i, _)| i.subject.as_str()), Some("user-2"));
    }

    #[test]
    fn digest_distinguishes_tokens() {
        assert_ne!(TokenDigest::of("a.b.c"), TokenDigest::of("a.b.d"));
        assert_eq!(TokenDigest::of("a.b.c"), TokenDigest::of("a.b.c"));
    }
}
