//! Secrets the control service holds (`{"control": NAME}`): rotated there, used by every
//! proxy within their TTL, with no reload.
//!
//! The root context's timer fetches each one (`GET /v1/secrets/{name}` with the filter
//! key, through the control cluster) when it was never fetched or three quarters of its
//! TTL have passed, so the refresh lands before the TTL is out. The value goes into
//! proxy-wasm shared data, where every worker's timer picks it up; a lease in shared data
//! makes one worker fetch for the whole proxy. Requests read only this VM's copy: no host
//! call on the hot path.
//!
//! A value once fetched keeps being used while the service is down (refreshes are retried
//! every second); a secret never fetched fails its requests closed (`503
//! dependency_unavailable`). Values are never logged or counted: log lines and counters
//! name the secret only.

use std::cell::RefCell;

use airlock_wire::SecretValue;
use serde::{Deserialize, Serialize};

use super::{header_safe, ControlSecret, Secret};
use crate::control::Control;
use crate::host::{Callout, Level, Runtime};
use crate::stats::MetricId;

/// Shared-data keys: the value (with when it was fetched) and the fetch lease.
const VALUE_PREFIX: &str = "airlock.credentials.secret.";
const LEASE_PREFIX: &str = "airlock.credentials.lease.";
/// A failed fetch is tried again after this long (by whichever worker takes the lease).
const RETRY_MS: u64 = 1000;

#[derive(Serialize, Deserialize)]
struct SharedValue {
    value: String,
    fetched_ms: u64,
}

#[derive(Default)]
struct Slot {
    value: Option<Secret>,
    fetched_ms: u64,
    /// The shared-data version this copy was read from.
    shared_version: Option<u32>,
    /// A callout of this VM is on its way.
    in_flight: bool,
    /// No fetch from this VM before this time (after a failure).
    retry_at_ms: u64,
}

pub struct SecretCounters {
    pub ok: MetricId,
    pub failed: MetricId,
}

/// This VM's copies of the control service's secrets, by index into
/// `Upstreams::control_secrets`.
#[derive(Default)]
pub struct ControlSecrets {
    slots: RefCell<Vec<Slot>>,
}

impl ControlSecrets {
    pub fn new(count: usize) -> ControlSecrets {
        ControlSecrets { slots: RefCell::new((0..count).map(|_| Slot::default()).collect()) }
    }

    /// The value to use now, if one was ever fetched.
    pub fn current(&self, index: usize) -> Option<Secret> {
        self.slots.borrow().get(index).and_then(|s| s.value.clone())
    }

    /// On the root context's timer: takes up what other workers fetched, then fetches
    /// what is due. Returns the callouts made, with the secret each is for.
    pub fn refresh(
        &self,
        rt: &mut dyn Runtime,
        control: &Control,
        secrets: &[ControlSecret],
        counters: &SecretCounters,
    ) -> Vec<(u32, usize)> {
        let now = rt.now_unix_ms();
        let mut calls = Vec::new();
        for (index, secret) in secrets.iter().enumerate() {
            self.take_shared(rt, index, &secret.name);
            let due = {
                let slots = self.slots.borrow();
                let Some(slot) = slots.get(index) else { continue };
                let stale = slot.value.is_none() || now >= slot.fetched_ms + secret.ttl_ms * 3 / 4;
                stale && !slot.in_flight && now >= slot.retry_at_ms
            };
            if !due || !take_lease(rt, &secret.name, now + control.timeout_ms + RETRY_MS) {
                continue;
            }
            let path = format!("/v1/secrets/{}", secret.name);
            let call = Callout {
                cluster: &control.cluster,
                method: "GET",
                authority: &control.authority,
                path: &path,
                headers: &[("authorization", control.authorization.expose())],
                body: None,
                timeout_ms: control.timeout_ms,
            };
            match rt.dispatch(&call) {
                Ok(token) => {
                    if let Some(slot) = self.slots.borrow_mut().get_mut(index) {
                        slot.in_flight = true;
                    }
                    calls.push((token, index));
                }
                Err(problem) => self.failed(rt, Failure { secret, index, counters, now }, &problem),
            }
        }
        calls
    }

    /// Takes the control service's answer for secret `index`.
    pub fn finish(
        &self,
        rt: &mut dyn Runtime,
        secret: &ControlSecret,
        index: usize,
        status: Option<u32>,
        body: Option<&[u8]>,
        counters: &SecretCounters,
    ) {
        let now = rt.now_unix_ms();
        if let Some(slot) = self.slots.borrow_mut().get_mut(index) {
            slot.in_flight = false;
        }
        let failure = Failure { secret, index, counters, now };
        let answer = match (status, body.map(serde_json::from_slice::<SecretValue>)) {
            (Some(200), Some(Ok(answer))) => answer,
            (Some(404), _) => {
                let problem = "the control service holds no secret of that name (404)";
                return self.failed(rt, failure, problem);
            }
            (Some(200), _) => return self.failed(rt, failure, "the answer is not a secret"),
            (Some(s), _) => return self.failed(rt, failure, &format!("answered HTTP {s}")),
            (None, _) => return self.failed(rt, failure, "unreachable or timed out"),
        };
        if let Err(problem) = header_safe(&answer.value) {
            return self.failed(rt, failure, problem);
        }
        rt.increment(counters.ok, 1);
        let shared = SharedValue { value: answer.value.into_owned(), fetched_ms: now };
        // Other workers read it on their next tick; this one uses it from now on.
        if let Ok(bytes) = serde_json::to_vec(&shared) {
            if let Err(problem) = rt.shared_set(&format!("{VALUE_PREFIX}{}", secret.name), &bytes, None) {
                rt.log(
                    Level::Warn,
                    &format!("airlock: control secret `{}` not shared with other workers: {problem}", secret.name),
                );
            }
        }
        let _ = rt.shared_set(&format!("{LEASE_PREFIX}{}", secret.name), b"0", None);
        if let Some(slot) = self.slots.borrow_mut().get_mut(index) {
            slot.value = Some(Secret::new(shared.value));
            slot.fetched_ms = now;
            slot.retry_at_ms = 0;
        }
    }

    /// Reads the shared copy of secret `index` if it changed since this VM last read it.
    fn take_shared(&self, rt: &dyn Runtime, index: usize, name: &str) {
        let Some((bytes, version)) = rt.shared_get(&format!("{VALUE_PREFIX}{name}")) else { return };
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
            }
        }
    }

    fn failed(&self, rt: &mut dyn Runtime, failure: Failure, why: &str) {
        let Failure { secret, index, counters, now } = failure;
        rt.increment(counters.failed, 1);
        let retry_at_ms = now + RETRY_MS;
        // The lease paces the other workers' retries too.
        let _ = rt.shared_set(&format!("{LEASE_PREFIX}{}", secret.name), retry_at_ms.to_string().as_bytes(), None);
        let held = match self.slots.borrow_mut().get_mut(index) {
            Some(slot) => {
                slot.retry_at_ms = retry_at_ms;
                slot.value.is_some()
            }
            None => false,
        };
        let consequence = if held {
            "the value fetched before stays in use"
        } else {
            "requests that need it are refused until it is fetched"
        };
        rt.log(Level::Warn, &format!("airlock: control secret `{}` not fetched ({why}); {consequence}", secret.name));
    }
}

/// What a failed fetch concerns.
#[derive(Clone, Copy)]
struct Failure<'a> {
    secret: &'a ControlSecret,
    index: usize,
    counters: &'a SecretCounters,
    now: u64,
}

/// Makes this worker the one that fetches `name` until `until_ms`, unless another holds
/// the lease. Shared data that cannot be written is no reason to stop refreshing: the
/// worker then fetches for itself.
fn take_lease(rt: &mut dyn Runtime, name: &str, until_ms: u64) -> bool {
    let key = format!("{LEASE_PREFIX}{name}");
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
