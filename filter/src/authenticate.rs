//! Who is calling: a token checked against the signing keys, and the keys themselves —
//! inline, or fetched from the identity provider through an Envoy cluster.
//!
//! Everything about keys lives here: when a fetch may start (no keys yet, an unknown
//! `kid`, the refresh timer), how many may be in flight, and what a failed fetch means.
//! A request asks one question, `authenticate`, and gets one of three answers.
//!
//! With OpenID Connect discovery a fetch has two steps: the discovery document, then the
//! JWKS it names. Every fetch starts with the document again, so a changed `jwks_uri` is
//! followed at the next refresh.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use crate::host::{Callout, Level, Runtime};
use crate::identity::Identity;
use crate::jwt::{AuthConfig, AuthError, JwksLocation, KeyFetch, KeySet, Verifier};
use crate::reply::{Code, Reply};
use crate::stats::MetricId;

/// At most this many key callouts in flight per VM, whatever the traffic: a burst of
/// requests while the IdP is slow must not turn into a burst of fetches.
const MAX_FETCHES_IN_FLIGHT: usize = 4;
/// A callout is forgotten this long after its timeout: Envoy drops the answer of one
/// made for a request that went away meanwhile, and a slot it held forever would stop
/// key fetching once `MAX_FETCHES_IN_FLIGHT` of them had piled up.
const FORGET_AFTER_TIMEOUT_MS: u64 = 1000;

/// The answer to "who is this?".
#[derive(Debug)]
pub enum Authentication {
    Verified(Rc<Identity>),
    /// A key fetch for this request is in flight (callout token): pause, and hand the
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

/// Which step of a fetch a callout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The OpenID Connect discovery document.
    Discovery,
    /// The JWKS.
    Keys,
}

/// A key callout in flight.
struct Pending {
    call: u32,
    phase: Phase,
    started_ms: u64,
}

/// Where a fetch stands after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchProgress {
    /// The fetch is over: keys taken, the failure noted, or the answer was not for a key
    /// callout.
    Finished,
    /// The discovery document was accepted and the JWKS it names is being fetched: the
    /// answer to this callout comes next.
    Continues(u32),
}

#[derive(Default)]
struct KeyState {
    current: Option<Rc<KeySet>>,
    fingerprint: u64,
    last_fetch_started: Option<u64>,
    last_success: Option<u64>,
    pending: Vec<Pending>,
}

/// The counters key fetching reports to.
#[derive(Debug, Clone, Copy)]
pub struct FetchCounters {
    pub ok: MetricId,
    pub failed: MetricId,
}

/// One per VM: Envoy calls a VM from one thread only, so `RefCell` is enough.
pub struct Authenticator {
    remote: Option<KeyFetch>,
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
        self.forget_lost_callouts(rt);
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

    /// The answer to callout `call` of the fetch `authenticate` started for `token`: the
    /// next step of the fetch, or, once it is over, the token judged on the keys there are
    /// now, without another fetch.
    pub fn keys_arrived(
        &self,
        rt: &mut dyn Runtime,
        call: u32,
        status: Option<u32>,
        body: Option<&[u8]>,
        token: &str,
    ) -> Authentication {
        if let FetchProgress::Continues(next) = self.finish_fetch(rt, call, status, body) {
            return Authentication::Fetching(next);
        }
        match self.verify(token, rt.now_unix_secs()) {
            Ok(identity) => Authentication::Verified(identity),
            Err(_) if !self.has_keys() => Authentication::Refused(Reply::new(
                Code::DependencyUnavailable,
                "the token signing keys cannot be fetched",
            )),
            Err(e) => Authentication::Refused(unauthenticated(&e)),
        }
    }

    /// The refresh timer: starts a fetch when one is due. The answer goes to
    /// [`Authenticator::finish_fetch`].
    pub fn refresh(&self, rt: &mut dyn Runtime) {
        self.forget_lost_callouts(rt);
        if self.may_fetch(FetchReason::Refresh, rt.now_unix_secs()) {
            if let Err(problem) = self.start_fetch(rt) {
                rt.log(Level::Warn, &format!("airlock: {problem}"));
            }
        }
    }

    /// Takes the answer to key callout `call` (any other callout is not ours: `Finished`).
    /// A failed step ends the fetch and keeps the last good keys: an IdP outage must not
    /// lock everyone out while their tokens are still valid.
    pub fn finish_fetch(
        &self,
        rt: &mut dyn Runtime,
        call: u32,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) -> FetchProgress {
        let phase = {
            let mut keys = self.keys.borrow_mut();
            let Some(at) = keys.pending.iter().position(|p| p.call == call) else {
                return FetchProgress::Finished;
            };
            keys.pending.swap_remove(at).phase
        };
        let outcome = match phase {
            Phase::Discovery => self.take_discovery(rt, status, body),
            Phase::Keys => self.take_keys(rt, status, body),
        };
        match outcome {
            Ok(progress) => progress,
            Err(problem) => {
                rt.increment(self.counters.failed, 1);
                rt.log(Level::Warn, &format!("airlock: JWKS refresh failed: {problem}"));
                FetchProgress::Finished
            }
        }
    }

    /// Checks the discovery document and fetches the JWKS it names.
    fn take_discovery(
        &self,
        rt: &mut dyn Runtime,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) -> Result<FetchProgress, String> {
        let Some(fetch) = &self.remote else { return Ok(FetchProgress::Finished) };
        let Some(discovery) = &fetch.discovery else { return Ok(FetchProgress::Finished) };
        let body = answer_body(status, body, "OpenID Connect discovery")?;
        let location = discovery.jwks_location(body).map_err(|e| format!("OpenID Connect discovery: {e}"))?;
        let call = self.dispatch(rt, fetch, &location, Phase::Keys)?;
        Ok(FetchProgress::Continues(call))
    }

    /// Takes a JWKS document.
    fn take_keys(
        &self,
        rt: &mut dyn Runtime,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) -> Result<FetchProgress, String> {
        let body = answer_body(status, body, "JWKS")?;
        let set = KeySet::from_jwks_json(body).map_err(|e| e.to_string())?;
        let print = fingerprint(body);
        rt.increment(self.counters.ok, 1);
        let now = rt.now_unix_secs();
        let mut keys = self.keys.borrow_mut();
        keys.last_success = Some(now);
        if keys.fingerprint != print || keys.current.is_none() {
            let count = set.len();
            keys.current = Some(Rc::new(set));
            keys.fingerprint = print;
            drop(keys);
            // A key that disappeared from the JWKS must stop working now, not when the
            // cached tokens it signed expire.
            self.verifier.borrow_mut().clear_cache();
            rt.log(Level::Info, &format!("airlock: loaded JWKS with {count} usable keys"));
        }
        Ok(FetchProgress::Finished)
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
        if keys.pending.len() >= MAX_FETCHES_IN_FLIGHT {
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
                keys.pending.is_empty() && due
            }
        }
    }

    /// Starts a fetch with its first step: the discovery document, or the JWKS itself.
    fn start_fetch(&self, rt: &mut dyn Runtime) -> Result<u32, String> {
        let Some(fetch) = &self.remote else {
            return Err("no remote JWKS configured".into());
        };
        let first = JwksLocation { authority: fetch.authority.clone(), path: fetch.path.clone() };
        let phase = if fetch.discovery.is_some() { Phase::Discovery } else { Phase::Keys };
        let call = self.dispatch(rt, fetch, &first, phase)?;
        self.keys.borrow_mut().last_fetch_started = Some(rt.now_unix_secs());
        Ok(call)
    }

    /// One key callout, always through the configured cluster.
    fn dispatch(&self, rt: &mut dyn Runtime, fetch: &KeyFetch, to: &JwksLocation, phase: Phase) -> Result<u32, String> {
        let call = Callout {
            cluster: &fetch.cluster,
            method: "GET",
            authority: &to.authority,
            path: &to.path,
            headers: &[("accept", "application/json")],
            body: None,
            timeout_ms: fetch.timeout_ms,
        };
        let started_ms = rt.now_unix_ms();
        let what = match phase {
            Phase::Discovery => "OpenID Connect discovery",
            Phase::Keys => "JWKS fetch",
        };
        let call =
            rt.dispatch(&call).map_err(|e| format!("{what} from cluster `{}` failed to start: {e}", fetch.cluster))?;
        self.keys.borrow_mut().pending.push(Pending { call, phase, started_ms });
        Ok(call)
    }

    /// Drops callouts whose answer can no longer come (see `FORGET_AFTER_TIMEOUT_MS`).
    fn forget_lost_callouts(&self, rt: &dyn Runtime) {
        let Some(fetch) = &self.remote else { return };
        let now_ms = rt.now_unix_ms();
        let limit = fetch.timeout_ms + FORGET_AFTER_TIMEOUT_MS;
        self.keys.borrow_mut().pending.retain(|p| now_ms.saturating_sub(p.started_ms) <= limit);
    }
}

/// The body of a successful answer, or why there is none.
fn answer_body<'a>(status: Option<u32>, body: Option<&'a [u8]>, what: &str) -> Result<&'a [u8], String> {
    match (status, body) {
        (Some(200), Some(body)) => Ok(body),
        (Some(200), None) => Err(format!("empty {what} body")),
        (Some(other), _) => Err(format!("{what} endpoint answered HTTP {other}")),
        (None, _) => Err(format!("{what} endpoint unreachable or timed out")),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
#[path = "discovery_tests.rs"]
mod discovery_tests;
