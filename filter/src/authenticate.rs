//! Who is calling: a token checked against the signing keys, and the keys themselves —
//! inline, or fetched from the identity provider through an Envoy cluster.
//!
//! Everything about keys lives here: when a fetch may start (no keys yet, an unknown
//! `kid`, the refresh timer), how many may be in flight, and what a failed fetch means.
//! A request asks one question, `authenticate`, and gets one of three answers.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use crate::host::{Callout, Level, Runtime};
use crate::identity::Identity;
use crate::jwt::{AuthConfig, AuthError, KeySet, RemoteJwks, Verifier};
use crate::reply::{Code, Reply};
use crate::stats::MetricId;

/// At most this many JWKS fetches in flight per VM, whatever the traffic: a burst of
/// requests while the IdP is slow must not turn into a burst of fetches.
const MAX_FETCHES_IN_FLIGHT: u32 = 4;

/// The answer to "who is this?".
#[derive(Debug)]
pub enum Authentication {
    Verified(Rc<Identity>),
    /// A JWKS fetch for this request is in flight (callout token): pause, and hand the
    /// answer to [`Authenticator::keys_arrived`].
    Fetching(u32),
    /// The request is answered with this.
    Refused(Reply),
}

/// Why a fetch is wanted, which decides how eagerly it may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchReason {
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

/// The counters key fetching reports to.
#[derive(Debug, Clone, Copy)]
pub struct FetchCounters {
    pub ok: MetricId,
    pub failed: MetricId,
}

/// One per VM: Envoy calls a VM from one thread only, so `RefCell` is enough.
pub struct Authenticator {
    remote: Option<RemoteJwks>,
    keys: RefCell<KeyState>,
    verifier: RefCell<Verifier>,
    empty_keys: KeySet,
    counters: FetchCounters,
}

impl Authenticator {
    /// Takes the inline keys out of `config`, if any: from now on they live here.
    pub fn new(config: &mut AuthConfig, counters: FetchCounters) -> Authenticator {
        let current = config.inline_keys.take().map(Rc::new);
        Authenticator {
            remote: config.remote.clone(),
            keys: RefCell::new(KeyState { current, ..KeyState::default() }),
            verifier: RefCell::new(Verifier::new(config)),
            empty_keys: KeySet::empty(),
            counters,
        }
    }

    /// Verifies `token`; starts a key fetch when the keys are missing or a rotation is
    /// likely, and the request should wait for it.
    pub fn authenticate(&self, rt: &mut dyn Runtime, token: &str, now: u64) -> Authentication {
        let err = match self.verify(token, now) {
            Ok(identity) => return Authentication::Verified(identity),
            Err(err) => err,
        };
        let reason = if !self.has_keys() {
            FetchReason::NoKeys
        } else if err == AuthError::UnknownKey {
            FetchReason::UnknownKey
        } else {
            return Authentication::Refused(unauthenticated(&err));
        };
        if self.may_fetch(reason, now) {
            return match self.start_fetch(rt) {
                Ok(call) => Authentication::Fetching(call),
                Err(problem) => {
                    rt.log(Level::Warn, &format!("airlock: {problem}"));
                    Authentication::Refused(Reply::new(
                        Code::DependencyUnavailable,
                        "the token signing keys cannot be fetched",
                    ))
                }
            };
        }
        if reason == FetchReason::NoKeys && self.remote.is_some() {
            return Authentication::Refused(Reply::new(
                Code::DependencyUnavailable,
                "the token signing keys are not available yet",
            ));
        }
        Authentication::Refused(unauthenticated(&err))
    }

    /// The answer to the fetch `authenticate` started for `token`: keys taken (or the
    /// failure noted), then the token judged on what is there now, without another fetch.
    pub fn keys_arrived(
        &self,
        rt: &mut dyn Runtime,
        status: Option<u32>,
        body: Option<&[u8]>,
        token: &str,
    ) -> Result<Rc<Identity>, Reply> {
        self.finish_fetch(rt, status, body);
        match self.verify(token, rt.now_unix_secs()) {
            Ok(identity) => Ok(identity),
            Err(_) if !self.has_keys() => {
                Err(Reply::new(Code::DependencyUnavailable, "the token signing keys cannot be fetched"))
            }
            Err(e) => Err(unauthenticated(&e)),
        }
    }

    /// The refresh timer: starts a fetch when one is due. The answer goes to
    /// [`Authenticator::finish_fetch`].
    pub fn refresh(&self, rt: &mut dyn Runtime) {
        if self.may_fetch(FetchReason::Refresh, rt.now_unix_secs()) {
            if let Err(problem) = self.start_fetch(rt) {
                rt.log(Level::Warn, &format!("airlock: {problem}"));
            }
        }
    }

    /// Takes a JWKS answer. A failed fetch keeps the last good keys: an IdP outage must
    /// not lock everyone out while their tokens are still valid.
    pub fn finish_fetch(&self, rt: &mut dyn Runtime, status: Option<u32>, body: Option<&[u8]>) {
        {
            let mut keys = self.keys.borrow_mut();
            keys.in_flight = keys.in_flight.saturating_sub(1);
        }
        let parsed = match (status, body) {
            (Some(200), Some(body)) => {
                KeySet::from_jwks_json(body).map(|k| (k, fingerprint(body))).map_err(|e| e.to_string())
            }
            (Some(200), None) => Err("empty JWKS body".to_string()),
            (Some(other), _) => Err(format!("JWKS endpoint answered HTTP {other}")),
            (None, _) => Err("JWKS endpoint unreachable or timed out".to_string()),
        };
        match parsed {
            Ok((set, print)) => {
                rt.increment(self.counters.ok, 1);
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
                rt.increment(self.counters.failed, 1);
                rt.log(Level::Warn, &format!("airlock: JWKS refresh failed: {problem}"));
            }
        }
    }

    fn verify(&self, token: &str, now: u64) -> Result<Rc<Identity>, AuthError> {
        let keys = self.keys.borrow().current.clone();
        let keys = keys.as_deref().unwrap_or(&self.empty_keys);
        self.verifier.borrow_mut().verify(token, keys, now)
    }

    fn has_keys(&self) -> bool {
        self.keys.borrow().current.is_some()
    }

    fn may_fetch(&self, reason: FetchReason, now: u64) -> bool {
        let Some(remote) = &self.remote else { return false };
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

    fn start_fetch(&self, rt: &mut dyn Runtime) -> Result<u32, String> {
        let Some(remote) = &self.remote else {
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
        let token = rt
            .dispatch(&call)
            .map_err(|e| format!("JWKS fetch from cluster `{}` failed to start: {e}", remote.cluster))?;
        let mut keys = self.keys.borrow_mut();
        keys.in_flight += 1;
        keys.last_fetch_started = Some(now);
        Ok(token)
    }
}

/// The answer to a token that is missing or does not verify.
pub fn unauthenticated(err: &AuthError) -> Reply {
    Reply::new(Code::Unauthenticated, err.to_string()).with_reason(err.reason())
}

fn fingerprint(body: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}
