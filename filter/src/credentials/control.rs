//! Secrets the control service holds (`{"control": NAME}`): rotated there, used by every
//! proxy within their TTL, with no reload.
//!
//! The root context's timer fetches each one (`GET /v1/secrets/{name}` with the filter
//! key, through the control cluster) when it was never fetched or three quarters of its
//! TTL have passed, so the refresh lands before the TTL is out. One worker fetches for the
//! whole proxy and shares the value (see `shared`).
//!
//! A value once fetched keeps being used while the service is down (refreshes are retried
//! every second); a secret never fetched fails its requests closed (`503
//! dependency_unavailable`). Values are never logged or counted: log lines and counters
//! name the secret only.

use airlock_wire::SecretValue;

use super::shared::{Fetched, SharedSlots, RETRY_MS};
use super::{header_safe, ControlSecret, Secret};
use crate::control::Control;
use crate::host::{Callout, Level, Runtime};
use crate::stats::MetricId;

pub struct SecretCounters {
    pub ok: MetricId,
    pub failed: MetricId,
}

/// This VM's copies of the control service's secrets, by index into
/// `Upstreams::control_secrets`.
pub struct ControlSecrets {
    slots: SharedSlots,
}

impl ControlSecrets {
    pub fn new(count: usize) -> ControlSecrets {
        ControlSecrets { slots: SharedSlots::new(count, "airlock.credentials.control.") }
    }

    /// The value to use now, if one was ever fetched (it never expires: a value once
    /// fetched stays in use while the service is down).
    pub fn current(&self, index: usize) -> Option<Secret> {
        self.slots.current(index, 0)
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
        let mut calls = Vec::new();
        for (index, secret) in secrets.iter().enumerate() {
            let lease_until = rt.now_unix_ms() + control.timeout_ms + RETRY_MS;
            if !self.slots.due(rt, index, &secret.name, lease_until) {
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
                    self.slots.set_in_flight(index, true);
                    calls.push((token, index));
                }
                Err(problem) => self.failed(rt, secret, index, counters, &problem),
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
        self.slots.set_in_flight(index, false);
        let answer = match (status, body.map(serde_json::from_slice::<SecretValue>)) {
            (Some(200), Some(Ok(answer))) => answer,
            (Some(404), _) => {
                let problem = "the control service holds no secret of that name (404)";
                return self.failed(rt, secret, index, counters, problem);
            }
            (Some(200), _) => return self.failed(rt, secret, index, counters, "the answer is not a secret"),
            (Some(s), _) => return self.failed(rt, secret, index, counters, &format!("answered HTTP {s}")),
            (None, _) => return self.failed(rt, secret, index, counters, "unreachable or timed out"),
        };
        if let Err(problem) = header_safe(&answer.value) {
            return self.failed(rt, secret, index, counters, problem);
        }
        rt.increment(counters.ok, 1);
        let refresh_at_ms = rt.now_unix_ms() + secret.ttl_ms * 3 / 4;
        let fetched = Fetched { value: answer.value.into_owned(), refresh_at_ms, expires_ms: None };
        // Other workers read it on their next tick; this one uses it from now on.
        if let Err(problem) = self.slots.store(rt, index, &secret.name, fetched) {
            rt.log(
                Level::Warn,
                &format!("airlock: control secret `{}` not shared with other workers: {problem}", secret.name),
            );
        }
    }

    fn failed(&self, rt: &mut dyn Runtime, secret: &ControlSecret, index: usize, counters: &SecretCounters, why: &str) {
        rt.increment(counters.failed, 1);
        let consequence = if self.slots.failed(rt, index, &secret.name) {
            "the value fetched before stays in use"
        } else {
            "requests that need it are refused until it is fetched"
        };
        rt.log(Level::Warn, &format!("airlock: control secret `{}` not fetched ({why}); {consequence}", secret.name));
    }
}
