//! How a request is held while Airlock decides on its body.
//!
//! With `allow_on_headers_stop_iteration: true` in the Wasm `PluginConfig` (Envoy ≥ 1.35),
//! a filter that pauses in the headers callback still receives the body, and nothing goes
//! upstream — no connection, no headers, no injected credential — until it resumes. That
//! is `hold.by: "envoy"`, the default and what every shipped config uses. Older Envoys
//! turn that pause into "stop everything": the body never arrives and the request would
//! hang. They need `hold.by: "buffer_filter"`: the headers continue and Envoy's `buffer`
//! filter, placed right after Airlock, holds them until the body has passed.
//!
//! A plugin config that says `envoy` on an Envoy whose `PluginConfig` lacks the knob must
//! not hang silently. The watch below notices: until one held request of this VM has seen
//! its body arrive (the knob is then proven on for the VM's life), a held request whose
//! body has not begun within `first_body_timeout_ms` is answered `500
//! airlock_misconfigured` by the root context, with a log line naming the fix.

use std::cell::{Cell, RefCell};

use serde::Deserialize;

use crate::config_error::ConfigError;

/// At most this many held requests are watched per VM; more are not watched (they are
/// answered by Envoy's own stream timeouts if the knob is missing).
const MAX_WATCHED: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HoldBy {
    /// Envoy ≥ 1.35 with `allow_on_headers_stop_iteration: true`.
    #[default]
    Envoy,
    /// Older Envoy: the headers continue and Envoy's `buffer` filter holds them.
    BufferFilter,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoldSpec {
    by: HoldBy,
    first_body_timeout_ms: u64,
}

impl Default for HoldSpec {
    fn default() -> Self {
        HoldSpec { by: HoldBy::Envoy, first_body_timeout_ms: 10_000 }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HoldConfig {
    pub by: HoldBy,
    pub first_body_timeout_ms: u64,
}

pub fn compile(spec: HoldSpec, field: &str) -> Result<HoldConfig, ConfigError> {
    if !(100..=300_000).contains(&spec.first_body_timeout_ms) {
        return Err(ConfigError::new(format!("{field}.first_body_timeout_ms"), "must be between 100 and 300000"));
    }
    Ok(HoldConfig { by: spec.by, first_body_timeout_ms: spec.first_body_timeout_ms })
}

/// Held requests waiting for their first body bytes, by context id, until the VM has
/// seen that Envoy delivers bodies of paused requests.
#[derive(Default)]
pub struct HoldWatch {
    verified: Cell<bool>,
    waiting: RefCell<Vec<(u32, u64)>>,
    timed_out: RefCell<Vec<u32>>,
}

impl HoldWatch {
    /// A request paused in its headers callback, waiting for its body.
    pub fn paused(&self, context_id: u32, now_ms: u64) {
        let mut waiting = self.waiting.borrow_mut();
        if !self.verified.get() && waiting.len() < MAX_WATCHED {
            waiting.push((context_id, now_ms));
        }
    }

    /// Body bytes arrived for a paused request: Envoy delivers them, for good.
    pub fn body_arrived(&self, context_id: u32) {
        if !self.verified.get() {
            self.verified.set(true);
            self.waiting.borrow_mut().clear();
        }
        self.forget(context_id);
    }

    /// The request is over; returns whether the watch answered it.
    pub fn finished(&self, context_id: u32) -> bool {
        self.forget(context_id);
        let mut timed_out = self.timed_out.borrow_mut();
        let before = timed_out.len();
        timed_out.retain(|id| *id != context_id);
        timed_out.len() != before
    }

    /// Requests paused longer than `limit_ms` without a byte of body: taken off the
    /// watch and remembered as answered (the caller answers them).
    pub fn overdue(&self, now_ms: u64, limit_ms: u64) -> Vec<u32> {
        if self.verified.get() {
            return Vec::new();
        }
        let mut waiting = self.waiting.borrow_mut();
        let mut late = Vec::new();
        waiting.retain(|(id, since)| {
            let is_late = now_ms.saturating_sub(*since) >= limit_ms;
            if is_late {
                late.push(*id);
            }
            !is_late
        });
        self.timed_out.borrow_mut().extend_from_slice(&late);
        late
    }

    pub fn is_verified(&self) -> bool {
        self.verified.get()
    }

    fn forget(&self, context_id: u32) {
        self.waiting.borrow_mut().retain(|(id, _)| *id != context_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_request_without_a_body_is_overdue_until_one_body_proves_the_knob() {
        let watch = HoldWatch::default();
        watch.paused(7, 1000);
        watch.paused(8, 5000);
        assert_eq!(watch.overdue(10_999, 10_000), Vec::<u32>::new());
        assert_eq!(watch.overdue(11_000, 10_000), vec![7]);
        assert!(watch.finished(7), "the watch answered request 7");
        assert!(!watch.finished(7));
        watch.body_arrived(9);
        assert!(watch.is_verified());
        assert_eq!(watch.overdue(60_000, 10_000), Vec::<u32>::new(), "once proven, slow clients are Envoy's business");
        watch.paused(10, 0);
        assert_eq!(watch.overdue(60_000, 10_000), Vec::<u32>::new());
    }

    #[test]
    fn hold_settings_are_checked_with_the_field_named() {
        let spec: HoldSpec =
            serde_json::from_value(serde_json::json!({"by": "buffer_filter", "first_body_timeout_ms": 5})).unwrap();
        assert_eq!(compile(spec, "hold").unwrap_err().field, "hold.first_body_timeout_ms");
        let spec: HoldSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(compile(spec, "hold").unwrap().by, HoldBy::Envoy);
    }
}
