//! State shared by every request of one Wasm VM: the validated config, the counters, the
//! current JWKS and the verified-token cache.
//!
//! Envoy runs one VM per worker thread and calls it from that thread only, so plain
//! `RefCell`s are enough; each VM fetches its own keys.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use crate::audit::AuditQueue;
use crate::config::Config;
use crate::host::{Callout, Level, Runtime};
use crate::identity::Identity;
use crate::jwt::{AuthError, KeySet, Verifier};
use crate::stats::Stats;

/// At most this many JWKS fetches in flight per VM, whatever the traffic: a burst of
/// requests while the IdP is slow must not turn into a burst of fetches.
const MAX_FETCHES_IN_FLIGHT: u32 = 4;

/// Why a fetch is wanted, which decides how eagerly it may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReason {
    /// No keys yet (start-up, or every fetch so far failed).
    NoKeys,
    /// A token names a `kid` we do not know: maybe the IdP rotated keys. Rate-limited by
    /// `min_refresh_interval_seconds`, since anyone can send random `kid`s.
    UnknownKey,
    /// The refresh timer.
    Refresh,
}

#[derive(Default)]
struct KeyState {
    current: Option<Rc<KeySet>>,
    fingerprint: u64,
    last_fetch_started: Option<u64>,
    last_success: Option<u64>,
    in_flight: u32,
}

pub struct VmState {
    pub config: Config,
    pub stats: Stats,
    keys: RefCell<KeyState>,
    verifier: RefCell<Verifier>,
    empty_keys: KeySet,
    pub audit: RefCell<AuditQueue>,
    /// Makes audit record ids unique across VMs and restarts: ingestion is idempotent by
    /// id, so two records must never share one.
    record_prefix: String,
    record_seq: std::cell::Cell<u64>,
    audit_drops: std::cell::Cell<u64>,
}

impl VmState {
    /// `instance` should differ between VMs (e.g. start time in nanoseconds and the root
    /// context id).
    pub fn new(mut config: Config, stats: Stats, instance: &str) -> Self {
        let verifier = RefCell::new(Verifier::new(&config.auth));
        let current = config.auth.inline_keys.take().map(Rc::new);
        let keys = RefCell::new(KeyState { current, ..KeyState::default() });
        let empty_keys = KeySet::empty();
        VmState {
            config,
            stats,
            keys,
            verifier,
            empty_keys,
            audit: RefCell::new(AuditQueue::default()),
            record_prefix: instance.to_string(),
            record_seq: std::cell::Cell::new(0),
            audit_drops: std::cell::Cell::new(0),
        }
    }

    pub fn next_record_id(&self) -> String {
        let n = self.record_seq.get() + 1;
        self.record_seq.set(n);
        format!("{}-{n}", self.record_prefix)
    }

    /// Ships the next audit batch if one is due. Called from the root context's timer,
    /// the only context that outlives requests, so the answer always finds its caller.
    pub fn ship_audit(&self, rt: &mut dyn Runtime) -> Option<u32> {
        let control = self.config.control.as_ref()?;
        let audit = self.config.audit.as_ref()?;
        let now = rt.now_unix_ms();
        let (body, count) = self.audit.borrow_mut().next_batch(now, audit.batch_size)?;
        let call = Callout {
            cluster: &control.cluster,
            method: "POST",
            authority: &control.authority,
            path: "/v1/audit/batch",
            headers: &[("content-type", "application/json"), ("authorization", control.authorization.expose())],
            body: Some(body.as_bytes()),
            timeout_ms: control.timeout_ms,
        };
        match rt.dispatch(&call) {
            Ok(token) => Some(token),
            Err(problem) => {
                self.audit.borrow_mut().failed(now);
                rt.increment(self.stats.audit_ship_failed, 1);
                rt.log(Level::Warn, &format!("airlock: cannot ship {count} audit records: {problem}"));
                None
            }
        }
    }

    /// Takes the answer to a shipped batch; `true` when it was delivered.
    pub fn finish_audit_shipment(&self, rt: &mut dyn Runtime, status: Option<u32>) -> bool {
        let mut queue = self.audit.borrow_mut();
        if status == Some(200) {
            queue.delivered();
            rt.increment(self.stats.audit_batches_shipped, 1);
            true
        } else {
            let now = rt.now_unix_ms();
            queue.failed(now);
            let waiting = queue.len();
            drop(queue);
            rt.increment(self.stats.audit_ship_failed, 1);
            let why = status.map_or_else(|| "unreachable or timed out".to_string(), |s| format!("answered HTTP {s}"));
            rt.log(Level::Warn, &format!("airlock: audit delivery failed (control service {why}); {waiting} records kept for retry"));
            false
        }
    }

    /// Counts a dropped audit record; says whether to log it. Logged at the 1st, 2nd,
    /// 4th, 8th... drop so an outage under load is visible without flooding the log.
    pub fn note_audit_drop(&self) -> Option<u64> {
        let n = self.audit_drops.get() + 1;
        self.audit_drops.set(n);
        n.is_power_of_two().then_some(n)
    }

    pub fn verify(&self, token: &str, now: u64) -> Result<Rc<Identity>, AuthError> {
        let keys = self.keys.borrow().current.clone();
        let keys = keys.as_deref().unwrap_or(&self.empty_keys);
        self.verifier.borrow_mut().verify(token, keys, now)
    }

    pub fn has_keys(&self) -> bool {
        self.keys.borrow().current.is_some()
    }

    pub fn uses_remote_keys(&self) -> bool {
        self.config.auth.remote.is_some()
    }

    pub fn may_fetch(&self, reason: FetchReason, now: u64) -> bool {
        let Some(remote) = &self.config.auth.remote else { return false };
        let keys = self.keys.borrow();
        if keys.in_flight >= MAX_FETCHES_IN_FLIGHT {
            return false;
        }
        let since_start = keys.last_fetch_started.map(|t| now.saturating_sub(t));
        match reason {
            FetchReason::NoKeys => true,
            FetchReason::UnknownKey => since_start.is_none_or(|s| s >= remote.min_refresh_interval_seconds),
            FetchReason::Refresh => {
                let due = match keys.last_success {
                    None => since_start.is_none_or(|s| s >= 1),
                    Some(t) => now.saturating_sub(t) >= remote.refresh_seconds,
                };
                keys.in_flight == 0 && due
            }
        }
    }

    /// Dispatches a JWKS fetch; the caller hands the answer to `finish_key_fetch`.
    pub fn start_key_fetch(&self, rt: &mut dyn Runtime) -> Result<u32, String> {
        let Some(remote) = &self.config.auth.remote else {
            return Err("no remote JWKS configured".into());
        };
        let call = Callout {
            cluster: &remote.cluster,
            method: "GET",
            authority: &remote.authority,
            path: &remote.path,
            headers: &[("accept", "application/json")],
            body: None,
            timeout_ms: remote.timeout_ms,
        };
        let now = rt.now_unix_secs();
        let token = rt.dispatch(&call).map_err(|e| format!("JWKS fetch from cluster `{}` failed to start: {e}", remote.cluster))?;
        let mut keys = self.keys.borrow_mut();
        keys.in_flight += 1;
        keys.last_fetch_started = Some(now);
        Ok(token)
    }

    /// Takes a JWKS answer. A failed fetch keeps the last good keys: an IdP outage must
    /// not lock everyone out while their tokens are still valid.
    pub fn finish_key_fetch(&self, rt: &mut dyn Runtime, status: Option<u32>, body: Option<&[u8]>) {
        {
            let mut keys = self.keys.borrow_mut();
            keys.in_flight = keys.in_flight.saturating_sub(1);
        }
        let parsed = match (status, body) {
            (Some(200), Some(body)) => KeySet::from_jwks_json(body).map(|k| (k, fingerprint(body))).map_err(|e| e.to_string()),
            (Some(200), None) => Err("empty JWKS body".to_string()),
            (Some(other), _) => Err(format!("JWKS endpoint answered HTTP {other}")),
            (None, _) => Err("JWKS endpoint unreachable or timed out".to_string()),
        };
        match parsed {
            Ok((set, print)) => {
                rt.increment(self.stats.jwks_fetch_ok, 1);
                let now = rt.now_unix_secs();
                let mut keys = self.keys.borrow_mut();
                keys.last_success = Some(now);
                if keys.fingerprint != print || keys.current.is_none() {
                    let count = set.len();
                    keys.current = Some(Rc::new(set));
                    keys.fingerprint = print;
                    drop(keys);
                    // A key that disappeared from the JWKS must stop working now, not
                    // when the cached tokens it signed expire.
                    self.verifier.borrow_mut().clear_cache();
                    rt.log(Level::Info, &format!("airlock: loaded JWKS with {count} usable keys"));
                }
            }
            Err(problem) => {
                rt.increment(self.stats.jwks_fetch_failed, 1);
                rt.log(Level::Warn, &format!("airlock: JWKS refresh failed: {problem}"));
            }
        }
    }
}

fn fingerprint(body: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}
