//! Values fetched for the whole proxy on the root context's timer and shared by its
//! workers: a control-service secret (see `control`) or an OAuth access token (see
//! `oauth`). One definition of the pattern both use.
//!
//! A lease in proxy-wasm shared data (written with compare-and-swap) makes one worker
//! fetch for the whole proxy; the value it fetched goes into shared data, where every
//! other worker's timer picks it up. Requests read only their VM's copy: no host call on
//! the hot path.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use super::Secret;
use crate::host::Runtime;

/// A failed fetch is tried again after this long (by whichever worker takes the lease).
pub const RETRY_MS: u64 = 1000;

#[derive(Serialize, Deserialize)]
struct SharedValue {
    value: String,
    fetched_ms: u64,
    refresh_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
}

#[derive(Default)]
struct Slot {
    value: Option<Secret>,
    fetched_ms: u64,
    /// When the value is fetched again (while it is still in use).
    refresh_at_ms: u64,
    /// When the value may no longer be used; never for a control-service secret.
    expires_ms: Option<u64>,
    /// The shared-data version this copy was read from.
    shared_version: Option<u32>,
    /// A callout of this VM is on its way.
    in_flight: bool,
    /// No fetch from this VM before this time (after a failure).
    retry_at_ms: u64,
}

/// A fetched value, when it is fetched again and when it may no longer be used.
pub struct Fetched {
    pub value: String,
    pub refresh_at_ms: u64,
    pub expires_ms: Option<u64>,
}

/// This VM's copies of shared values, by index; `prefix` names them in shared data
/// (`{prefix}value.{name}` and `{prefix}lease.{name}`).
pub struct SharedSlots {
    slots: RefCell<Vec<Slot>>,
    prefix: &'static str,
}

impl SharedSlots {
    pub fn new(count: usize, prefix: &'static str) -> SharedSlots {
        SharedSlots { slots: RefCell::new((0..count).map(|_| Slot::default()).collect()), prefix }
    }

    /// The value to use at `now_ms`, if one was fetched and has not expired.
    pub fn current(&self, index: usize, now_ms: u64) -> Option<Secret> {
        let slots = self.slots.borrow();
        let slot = slots.get(index)?;
        if slot.expires_ms.is_some_and(|expires| now_ms >= expires) {
            return None;
        }
        slot.value.clone()
    }

    /// Whether a fetch of `index` failed less than [`RETRY_MS`] ago (in this VM).
    pub fn retrying(&self, index: usize, now_ms: u64) -> bool {
        self.slots.borrow().get(index).is_some_and(|slot| now_ms < slot.retry_at_ms)
    }

    /// Whether this VM holds a value for `index` (expired or not).
    pub fn held(&self, index: usize, now_ms: u64) -> bool {
        self.current(index, now_ms).is_some()
    }

    /// Takes up what another worker fetched, then says whether this worker should fetch
    /// `name` now: the value is missing or due for refresh, no fetch of this VM is on its
    /// way, no retry is pending, and this worker won the lease until `lease_until_ms`.
    pub fn due(&self, rt: &mut dyn Runtime, index: usize, name: &str, lease_until_ms: u64) -> bool {
        self.take_shared(rt, index, name);
        let now = rt.now_unix_ms();
        let due = {
            let slots = self.slots.borrow();
            let Some(slot) = slots.get(index) else { return false };
            let stale = slot.value.is_none() || now >= slot.refresh_at_ms;
            stale && !slot.in_flight && now >= slot.retry_at_ms
        };
        due && self.take_lease(rt, name, lease_until_ms)
    }

    /// A fetch of `index` is on its way (`true`) or came back (`false`).
    pub fn set_in_flight(&self, index: usize, in_flight: bool) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(index) {
            slot.in_flight = in_flight;
        }
    }

    /// Keeps a fetched value, shares it with the other workers and frees the lease.
    /// Returns why it could not be shared, if it could not (this worker still uses it).
    pub fn store(&self, rt: &mut dyn Runtime, index: usize, name: &str, fetched: Fetched) -> Result<(), String> {
        let now = rt.now_unix_ms();
        let shared = SharedValue {
            value: fetched.value,
            fetched_ms: now,
            refresh_at_ms: fetched.refresh_at_ms,
            expires_ms: fetched.expires_ms,
        };
        let outcome = match serde_json::to_vec(&shared) {
            Ok(bytes) => rt.shared_set(&self.key("value", name), &bytes, None).map(|_| ()),
            Err(e) => Err(e.to_string()),
        };
        let _ = rt.shared_set(&self.key("lease", name), b"0", None);
        if let Some(slot) = self.slots.borrow_mut().get_mut(index) {
            slot.fetched_ms = now;
            slot.refresh_at_ms = shared.refresh_at_ms;
            slot.expires_ms = shared.expires_ms;
            slot.value = Some(Secret::new(shared.value));
            slot.retry_at_ms = 0;
        }
        outcome
    }

    /// A fetch failed: every worker waits [`RETRY_MS`] before the next. Returns whether
    /// a value still usable now is held.
    pub fn failed(&self, rt: &mut dyn Runtime, index: usize, name: &str) -> bool {
        let now = rt.now_unix_ms();
        let retry_at_ms = now + RETRY_MS;
        // The lease paces the other workers' retries too.
        let _ = rt.shared_set(&self.key("lease", name), retry_at_ms.to_string().as_bytes(), None);
        if let Some(slot) = self.slots.borrow_mut().get_mut(index) {
            slot.retry_at_ms = retry_at_ms;
        }
        self.held(index, now)
    }

    fn key(&self, what: &str, name: &str) -> String {
        format!("{}{what}.{name}", self.prefix)
    }

    /// Reads the shared copy of `index` if it changed since this VM last read it.
    pub fn take_shared(&self, rt: &dyn Runtime, index: usize, name: &str) {
        let Some((bytes, version)) = rt.shared_get(&self.key("value", name)) else { return };
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(index) else { return };
        if slot.shared_version == Some(version) {
            return;
        }
        slot.shared_version = Some(version);
        if let Ok(shared) = serde_json::from_slice::<SharedValue>(&bytes) {
            if shared.fetched_ms >= slot.fetched_ms {
                slot.value = Some(Secret::new(shared.value));
                slot.fetched_ms = shared.fetched_ms;
                slot.refresh_at_ms = shared.refresh_at_ms;
                slot.expires_ms = shared.expires_ms;
            }
        }
    }

    /// Makes this worker the one that fetches `name` until `until_ms`, unless another
    /// holds the lease. Shared data that cannot be written is no reason to stop
    /// refreshing: the worker then fetches for itself.
    fn take_lease(&self, rt: &mut dyn Runtime, name: &str, until_ms: u64) -> bool {
        let key = self.key("lease", name);
        let now = rt.now_unix_ms();
        let (held_until, version) = match rt.shared_get(&key) {
            Some((bytes, version)) => {
                (std::str::from_utf8(&bytes).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0), Some(version))
            }
            None => (0, None),
        };
        if held_until > now {
            return false;
        }
        rt.shared_set(&key, until_ms.to_string().as_bytes(), version).unwrap_or(true)
    }
}
