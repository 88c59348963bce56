//! Per-identity rate limits of rules (`limit: {requests, per_seconds, by}`), counted in
//! proxy-wasm shared data so that every worker thread's VM of one Envoy counts together.
//!
//! # Counting
//! Fixed windows: window `w` of a rule is `now / per_seconds`. A request the rule decides
//! adds one to its key's count in the current window, unless the count has reached
//! `requests` already: then it is limited until the window ends (`retry-after`). Refused
//! requests are not added, so a caller that keeps knocking does not extend its wait.
//!
//! # Memory
//! A rule owns a fixed table of [`SLOTS`] shared-data keys (created as they are first
//! used, never more), so no number of identities — client-named sessions included — can
//! grow Envoy's memory without bound. A slot holds one identity's window and count; the
//! identity's hash picks the slot, and up to [`PROBES`] neighbours are tried when it is
//! held by another identity in the current window. An entry of an older window is free:
//! the next window overwrites it. Keys name the rule and the slot; identities appear in
//! shared data only as a SHA-256 fingerprint.
//!
//! # Concurrency
//! Updates are compare-and-swap on the slot's version, retried up to [`MAX_ATTEMPTS`]
//! times. Envoy checks a version only for a key that exists: two workers creating the
//! same slot at the same instant can both succeed and count one request instead of two.
//! That can only happen on a slot's very first use after Envoy starts, so it lets at
//! most (workers − 1) extra requests through, once per slot. Failing to count (CAS keeps
//! losing, the slot's neighbourhood is full, or Envoy refuses the write) refuses the
//! request: fail closed.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::config_error::ConfigError;
use crate::host::Runtime;
use crate::identity::Identity;

/// Slots per rule. At 1,000 identities active in one window the chance that all probes
/// of a new one are taken is about 1e-12; at 4,000 about 1e-5.
pub const SLOTS: u32 = 16_384;
/// Slots tried per identity.
pub const PROBES: u32 = 8;
/// Compare-and-swap attempts per request before it is refused.
pub const MAX_ATTEMPTS: u32 = 8;
/// The longest window: a day. Counts live in memory and die with Envoy anyway.
pub const MAX_PER_SECONDS: u64 = 86_400;
/// More requests than this per window is no limit.
pub const MAX_REQUESTS: u32 = 1_000_000_000;

/// Whose requests share a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// The verified token's subject.
    Subject,
    /// The audit session: the session header the client sent, else one per token.
    Session,
    /// The caller's exact set of groups (order ignored); callers without groups share one.
    Group,
}

impl By {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            By::Subject => "subject",
            By::Session => "session",
            By::Group => "group",
        }
    }

    fn tag(self) -> u8 {
        match self {
            By::Subject => 1,
            By::Session => 2,
            By::Group => 3,
        }
    }
}

/// `limit` as operators write it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    pub requests: u64,
    pub per_seconds: u64,
    pub by: By,
}

/// A validated limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub requests: u32,
    pub per_seconds: u64,
    pub by: By,
}

impl Limit {
    /// `field` is the config path of the `limit` block, e.g. `rules[3].limit`.
    pub fn compile(spec: LimitSpec, field: &str) -> Result<Limit, ConfigError> {
        if spec.requests == 0 || spec.requests > u64::from(MAX_REQUESTS) {
            return Err(ConfigError::new(format!("{field}.requests"), format!("must be 1 to {MAX_REQUESTS}")));
        }
        if spec.per_seconds == 0 || spec.per_seconds > MAX_PER_SECONDS {
            return Err(ConfigError::new(
                format!("{field}.per_seconds"),
                format!("must be 1 to {MAX_PER_SECONDS} (a day)"),
            ));
        }
        Ok(Limit { requests: spec.requests as u32, per_seconds: spec.per_seconds, by: spec.by })
    }
}

/// What counting a request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Counted, under the limit.
    Counted,
    /// The limit is reached: the window ends in this many seconds (at least 1).
    Limited { retry_after_secs: u64 },
    /// The request could not be counted; it is refused.
    Uncounted(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Other workers kept changing the slot ([`MAX_ATTEMPTS`] lost races).
    Contended,
    /// Every probed slot holds another identity in this window.
    TableFull,
    /// Envoy refused to store the count.
    Host(String),
}

impl Failure {
    pub fn describe(&self) -> String {
        match self {
            Failure::Contended => format!("the count kept changing under {MAX_ATTEMPTS} attempts"),
            Failure::TableFull => format!("all {PROBES} candidate slots are taken in this window"),
            Failure::Host(problem) => problem.clone(),
        }
    }
}

/// The rule's table of counters in shared data, and the size of that table (tests use
/// small ones to fill it).
pub struct Counter<'a> {
    pub rule: &'a str,
    pub limit: &'a Limit,
    pub slots: u32,
}

/// One slot's value: fingerprint, window, count.
const ENTRY_LEN: usize = 16 + 8 + 4;

struct Entry {
    fingerprint: [u8; 16],
    window: u64,
    count: u32,
}

impl Entry {
    /// `None` for a value this layout did not write (another filter build on the same
    /// `vm_id`): the slot is taken over as free.
    fn parse(bytes: &[u8]) -> Option<Entry> {
        let bytes: &[u8; ENTRY_LEN] = bytes.try_into().ok()?;
        let (fingerprint, rest) = bytes.split_first_chunk::<16>()?;
        let (window, rest) = rest.split_first_chunk::<8>()?;
        let count: &[u8; 4] = rest.try_into().ok()?;
        Some(Entry {
            fingerprint: *fingerprint,
            window: u64::from_le_bytes(*window),
            count: u32::from_le_bytes(*count),
        })
    }

    fn bytes(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0; ENTRY_LEN];
        let (fingerprint, rest) = out.split_at_mut(16);
        let (window, count) = rest.split_at_mut(8);
        fingerprint.copy_from_slice(&self.fingerprint);
        window.copy_from_slice(&self.window.to_le_bytes());
        count.copy_from_slice(&self.count.to_le_bytes());
        out
    }
}

/// Who is counted, as `by` says: the value whose hash keys the count.
pub fn identity_hash(by: By, identity: &Identity, session: &str) -> [u8; 32] {
    let mut h = hmac_sha256::Hash::new();
    h.update([by.tag()]);
    // Length-prefixed so that no two group sets (or a group and a subject) hash alike.
    let mut part = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    };
    match by {
        By::Subject => part(&identity.subject),
        By::Session => part(session),
        By::Group => {
            let mut groups: Vec<&str> = identity.groups.iter().map(String::as_str).collect();
            groups.sort_unstable();
            groups.dedup();
            groups.into_iter().for_each(part);
        }
    }
    h.finalize()
}

impl Counter<'_> {
    pub fn new<'a>(rule: &'a str, limit: &'a Limit) -> Counter<'a> {
        Counter { rule, limit, slots: SLOTS }
    }

    /// Counts one request of the identity `hash` (see [`identity_hash`]) at `now_ms`.
    pub fn count(&self, rt: &mut dyn Runtime, hash: &[u8; 32], now_ms: u64) -> Outcome {
        let (fingerprint, rest) = hash.split_at(16);
        let fingerprint: [u8; 16] = fingerprint.try_into().unwrap_or_default();
        let slots = u64::from(self.slots.max(1));
        let first = u64::from(u32::from_le_bytes(rest.first_chunk::<4>().copied().unwrap_or_default()));
        let per_ms = self.limit.per_seconds.saturating_mul(1000).max(1);
        let window = now_ms / per_ms;
        let mut key = String::with_capacity(self.rule.len() + 24);
        let mut attempts = 0;
        let mut probe = 0;
        while probe < PROBES {
            key.clear();
            let _ = write!(key, "airlock.limit.{}.{}", self.rule, (first + u64::from(probe)) % slots);
            let (entry, version) = match rt.shared_get(&key) {
                Some((value, version)) => (Entry::parse(&value), Some(version)),
                None => (None, None),
            };
            // An entry of this window (or, by a worker whose clock is a little ahead, of
            // the next) is live; older ones are free.
            let next = match entry {
                Some(e) if e.window >= window && e.fingerprint == fingerprint => {
                    if e.count >= self.limit.requests {
                        let ends_ms = e.window.saturating_add(1).saturating_mul(per_ms);
                        let retry_after_secs = ends_ms.saturating_sub(now_ms).div_ceil(1000).max(1);
                        return Outcome::Limited { retry_after_secs };
                    }
                    Entry { fingerprint, window: e.window, count: e.count + 1 }
                }
                Some(e) if e.window >= window => {
                    probe += 1;
                    continue;
                }
                _ => Entry { fingerprint, window, count: 1 },
            };
            match rt.shared_set(&key, &next.bytes(), version) {
                Ok(true) => return Outcome::Counted,
                // Another worker wrote first: read the slot again.
                Ok(false) => {
                    attempts += 1;
                    if attempts >= MAX_ATTEMPTS {
                        return Outcome::Uncounted(Failure::Contended);
                    }
                }
                Err(problem) => return Outcome::Uncounted(Failure::Host(problem)),
            }
        }
        Outcome::Uncounted(Failure::TableFull)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
