//! State shared by every request of one Wasm VM: the validated config, the counters, the
//! token authenticator (keys and verified-token cache) and the audit queue.
//!
//! Envoy runs one VM per worker thread and calls it from that thread only, so plain
//! `RefCell`s are enough; each VM fetches its own keys.

use std::cell::{Cell, RefCell};

use crate::audit::AuditQueue;
use crate::authenticate::{Authenticator, FetchCounters};
use crate::config::Config;
use crate::credentials::control::{ControlSecrets, SecretCounters};
use crate::credentials::exchange::{ExchangeCounters, ExchangedTokens};
use crate::credentials::oauth::{OAuthTokens, TokenCounters};
use crate::hold::HoldWatch;
use crate::host::{Callout, Level, Runtime};
use crate::pins::{self, PinMode, PinSync};
use crate::stats::Stats;

pub struct VmState {
    pub config: Config,
    pub stats: Stats,
    pub auth: Authenticator,
    /// Requests held for their body, watched until Envoy proves it delivers bodies.
    pub holds: HoldWatch,
    pub audit: RefCell<AuditQueue>,
    /// MCP tool pins on their way to and from the control service.
    pub pins: RefCell<PinSync>,
    /// This VM's copies of the upstream secrets the control service holds.
    pub secrets: ControlSecrets,
    /// This VM's copies of the upstreams' OAuth access tokens.
    pub oauth: OAuthTokens,
    /// This VM's tokens exchanged for callers' tokens (`token_exchange`).
    pub exchanged: ExchangedTokens,
    /// Makes audit record ids unique across VMs and restarts: ingestion is idempotent by
    /// id, so two records must never share one.
    record_prefix: String,
    record_seq: Cell<u64>,
    audit_drops: Cell<u64>,
    /// Set when Envoy lets the VM go: until then (unix ms) the VM ships what is queued.
    shutdown_deadline_ms: Cell<Option<u64>>,
}

/// Where the last flush stands, once Envoy has said it lets the VM go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Records are still queued and the deadline has not passed: keep shipping.
    Flushing,
    /// Nothing is left to ship (all delivered, or the rest counted as dropped): the VM
    /// may go.
    Done,
}

impl VmState {
    /// `instance` should differ between VMs (e.g. start time in nanoseconds and the root
    /// context id).
    pub fn new(mut config: Config, stats: Stats, instance: &str) -> Self {
        let auth = Authenticator::new(
            &mut config.auth,
            FetchCounters { ok: stats.jwks_fetch_ok, failed: stats.jwks_fetch_failed },
        );
        let secrets = ControlSecrets::new(config.upstreams.control_secrets.len());
        let oauth = OAuthTokens::new(config.upstreams.oauth_clients.len(), instance);
        let exchanged = ExchangedTokens::new(config.upstreams.token_exchanges.len(), instance);
        VmState {
            exchanged,
            secrets,
            oauth,
            config,
            stats,
            auth,
            holds: HoldWatch::default(),
            audit: RefCell::new(AuditQueue::default()),
            pins: RefCell::new(PinSync::default()),
            record_prefix: instance.to_string(),
            record_seq: Cell::new(0),
            audit_drops: Cell::new(0),
            shutdown_deadline_ms: Cell::new(None),
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
            rt.log(
                Level::Warn,
                &format!("airlock: audit delivery failed (control service {why}); {waiting} records kept for retry"),
            );
            false
        }
    }

    /// Fetches the control service's secrets that are due (root context's timer); the
    /// callouts made, with the secret each is for.
    pub fn refresh_secrets(&self, rt: &mut dyn Runtime) -> Vec<(u32, usize)> {
        let Some(control) = self.config.control.as_ref() else { return Vec::new() };
        self.secrets.refresh(rt, control, &self.config.upstreams.control_secrets, &self.secret_counters())
    }

    /// Takes the answer to the fetch of secret `index`.
    pub fn finish_secret_fetch(&self, rt: &mut dyn Runtime, index: usize, status: Option<u32>, body: Option<&[u8]>) {
        if let Some(secret) = self.config.upstreams.control_secrets.get(index) {
            self.secrets.finish(rt, secret, index, status, body, &self.secret_counters());
        }
    }

    /// Fetches the OAuth access tokens that are missing or due (root context's timer);
    /// the callouts made, with the client each is for.
    pub fn refresh_oauth(&self, rt: &mut dyn Runtime) -> Vec<(u32, usize)> {
        self.oauth.refresh(rt, &self.config.upstreams.oauth_clients, &self.token_counters())
    }

    /// Takes the token endpoint's answer for client `index`.
    pub fn finish_oauth_fetch(&self, rt: &mut dyn Runtime, index: usize, status: Option<u32>, body: Option<&[u8]>) {
        if let Some(client) = self.config.upstreams.oauth_clients.get(index) {
            self.oauth.finish(rt, client, index, status, body, &self.token_counters());
        }
    }

    /// Exchanges again the tokens used past their refresh time (root context's timer);
    /// the callouts made, with the upstream and subject token each is for.
    pub fn refresh_exchanged(&self, rt: &mut dyn Runtime) -> Vec<(u32, usize, String)> {
        self.exchanged.refresh(rt, &self.config.upstreams.token_exchanges, &self.exchange_counters())
    }

    /// Takes the token endpoint's answer to a refresh of `subject_token`'s token.
    pub fn finish_exchange_refresh(
        &self,
        rt: &mut dyn Runtime,
        (index, subject_token): (usize, &str),
        status: Option<u32>,
        body: Option<&[u8]>,
    ) {
        let exchanges = &self.config.upstreams.token_exchanges;
        let counters = self.exchange_counters();
        self.exchanged.finish_refresh(rt, exchanges, (index, subject_token), status, body, &counters);
    }

    pub fn exchange_counters(&self) -> ExchangeCounters {
        ExchangeCounters { ok: self.stats.credentials_exchange_ok, failed: self.stats.credentials_exchange_failed }
    }

    pub fn token_counters(&self) -> TokenCounters {
        TokenCounters { ok: self.stats.credentials_oauth_fetch_ok, failed: self.stats.credentials_oauth_fetch_failed }
    }

    fn secret_counters(&self) -> SecretCounters {
        SecretCounters {
            ok: self.stats.credentials_secret_fetch_ok,
            failed: self.stats.credentials_secret_fetch_failed,
        }
    }

    /// Queues what a `tools/list` answer showed for the next report to the service.
    pub fn report_pins(&self, rt: &mut dyn Runtime, report: Vec<airlock_wire::ToolObservation>) {
        if !report.is_empty() && !self.pins.borrow_mut().push(report) {
            rt.log(Level::Warn, "airlock: MCP tool observations dropped: the control service has not taken them");
        }
    }

    /// Posts the observations waiting, or reads the service's pins when that is due (at
    /// the first tick, then every `mcp.pin_refresh_ms`). Called from the root context's
    /// timer: `report` says which exchange, and a callout already in flight for it is
    /// not doubled. Returns the callout's token.
    pub fn sync_pins(&self, rt: &mut dyn Runtime, report: bool) -> Option<u32> {
        let control = self.config.control.as_ref()?;
        if self.config.mcp.pin_tools == PinMode::Off {
            return None;
        }
        let body = if report {
            Some(self.pins.borrow_mut().next_report()?)
        } else {
            let now = rt.now_unix_ms();
            if !self.pins.borrow_mut().refresh_due(now, self.config.mcp.pin_refresh_ms) {
                return None;
            }
            None
        };
        let call = Callout {
            cluster: &control.cluster,
            method: if report { "POST" } else { "GET" },
            authority: &control.authority,
            path: if report { "/v1/mcp/tool-definitions" } else { "/v1/mcp/tool-pins" },
            headers: &[("content-type", "application/json"), ("authorization", control.authorization.expose())],
            body: body.as_deref(),
            timeout_ms: control.timeout_ms,
        };
        match rt.dispatch(&call) {
            Ok(token) => Some(token),
            Err(problem) => {
                self.pin_sync_failed(rt, report, &problem);
                None
            }
        }
    }

    /// Takes the service's answer to a report (`report`) or a refresh: its pins (both
    /// answer them) go into shared data.
    pub fn finish_pin_sync(&self, rt: &mut dyn Runtime, report: bool, status: Option<u32>, body: Option<&[u8]>) {
        let pins = match (status, body.map(serde_json::from_slice::<airlock_wire::ToolPins>)) {
            (Some(200), Some(Ok(pins))) => pins,
            _ => {
                let why =
                    status.map_or_else(|| "unreachable or timed out".to_string(), |s| format!("answered HTTP {s}"));
                self.pin_sync_failed(rt, report, &format!("control service {why}"));
                return;
            }
        };
        if report {
            self.pins.borrow_mut().reported(true);
        }
        let unknown = pins::apply(rt, pins);
        self.report_pins(rt, unknown);
    }

    fn pin_sync_failed(&self, rt: &mut dyn Runtime, report: bool, problem: &str) {
        if report {
            self.pins.borrow_mut().reported(false);
        }
        rt.increment(self.stats.mcp_pin_sync_failed, 1);
        let what = if report { "reported" } else { "refreshed" };
        rt.log(Level::Warn, &format!("airlock: MCP tool pins not {what} ({problem}); known pins stay in force"));
    }

    /// Envoy lets the VM go (listener drained, plugin config replaced, hot restart or
    /// shutdown): starts the last flush, bounded by `audit.shutdown_flush_ms`.
    pub fn begin_shutdown(&self, rt: &mut dyn Runtime) -> Shutdown {
        let Some(audit) = self.config.audit.as_ref() else { return Shutdown::Done };
        let deadline = rt.now_unix_ms().saturating_add(audit.shutdown_flush_ms);
        self.shutdown_deadline_ms.set(Some(deadline));
        let waiting = {
            let mut queue = self.audit.borrow_mut();
            queue.retry_now();
            queue.len()
        };
        if waiting > 0 {
            // Envoy stopping does not wait for a VM (see `glue/root.rs`): without the
            // "flushed" line that normally follows, these records were lost, and this
            // line is what says how many.
            let ms = audit.shutdown_flush_ms;
            rt.log(
                Level::Info,
                &format!("airlock: VM let go with {waiting} audit records queued; shipping them (at most {ms} ms)"),
            );
        }
        self.flush_until(rt, deadline)
    }

    /// Where the last flush stands; `None` while Envoy has not let the VM go.
    pub fn shutdown_progress(&self, rt: &mut dyn Runtime) -> Option<Shutdown> {
        let deadline = self.shutdown_deadline_ms.get()?;
        Some(self.flush_until(rt, deadline))
    }

    /// `Done` once the queue is empty, or once `deadline` has passed: what is still queued
    /// then (a batch in flight included, its delivery unconfirmed) is counted as dropped.
    fn flush_until(&self, rt: &mut dyn Runtime, deadline: u64) -> Shutdown {
        if self.audit.borrow().is_empty() {
            return Shutdown::Done;
        }
        if rt.now_unix_ms() < deadline {
            return Shutdown::Flushing;
        }
        let lost = self.audit.borrow_mut().abandon() as u64;
        rt.increment(self.stats.audit_dropped, lost);
        self.audit_drops.set(self.audit_drops.get() + lost);
        let ms = self.config.audit.as_ref().map_or(0, |a| a.shutdown_flush_ms);
        rt.log(
            Level::Warn,
            &format!(
                "airlock: VM let go with {lost} audit records not confirmed delivered within \
                    audit.shutdown_flush_ms ({ms} ms); counted as dropped"
            ),
        );
        Shutdown::Done
    }

    /// Counts a dropped audit record; says whether to log it. Logged at the 1st, 2nd,
    /// 4th, 8th... drop so an outage under load is visible without flooding the log.
    pub fn note_audit_drop(&self) -> Option<u64> {
        let n = self.audit_drops.get() + 1;
        self.audit_drops.set(n);
        n.is_power_of_two().then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;

    /// A VM with audit on, and the host that defined its counters (to read them by name).
    fn vm(shutdown_flush_ms: u64) -> (VmState, MockHost) {
        let config = serde_json::json!({
            "auth": {"issuers": ["https://idp.test"], "audiences": ["airlock"],
                "jwks": {"inline": {"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256",
                    "k": "YS10ZXN0LWhtYWMtc2VjcmV0LXRoYXQtaXMtbG9uZy1lbm91Z2gtZm9yLWhzMjU2"}]}}},
            "control": {"cluster": "control", "authority": "control",
                "filter_key": {"value": "a-filter-key-of-16+chars"}},
            "audit": {"batch_size": 200, "shutdown_flush_ms": shutdown_flush_ms},
            "rules": [],
            "default_action": "deny"
        });
        let config = Config::from_json(config.to_string().as_bytes(), &|_| None).unwrap();
        let mut host = MockHost::default();
        let stats = Stats::define(&mut host, &config).unwrap();
        (VmState::new(config, stats, "test"), host)
    }

    fn queue(vm: &VmState, n: usize) {
        for i in 0..n {
            assert!(vm.audit.borrow_mut().push(format!("{{\"n\":{i}}}"), 10_000));
        }
    }

    #[test]
    fn ships_every_queued_record_batch_after_batch_before_the_vm_may_go() {
        let (vm, mut host) = vm(5000);
        queue(&vm, 450);
        assert_eq!(vm.shutdown_progress(&mut host), None, "not shutting down yet");
        assert_eq!(vm.begin_shutdown(&mut host), Shutdown::Flushing);
        let mut batches = 0;
        while vm.ship_audit(&mut host).is_some() {
            batches += 1;
            assert!(vm.finish_audit_shipment(&mut host, Some(200)));
            let step = vm.shutdown_progress(&mut host);
            assert_eq!(step, Some(if batches < 3 { Shutdown::Flushing } else { Shutdown::Done }));
        }
        assert_eq!(batches, 3, "200 + 200 + 50, one after another");
        assert_eq!(host.counter("airlock.audit.dropped"), 0);
    }

    #[test]
    fn what_is_still_queued_at_the_deadline_is_counted_as_dropped_and_logged() {
        let (vm, mut host) = vm(2000);
        host.now_ms = 10_000;
        queue(&vm, 5);
        assert_eq!(vm.begin_shutdown(&mut host), Shutdown::Flushing);
        assert!(vm.ship_audit(&mut host).is_some());
        assert!(!vm.finish_audit_shipment(&mut host, None), "the control service does not answer");
        host.now_ms = 11_999;
        assert_eq!(vm.shutdown_progress(&mut host), Some(Shutdown::Flushing), "the deadline has not passed");
        host.now_ms = 12_000;
        assert_eq!(vm.shutdown_progress(&mut host), Some(Shutdown::Done));
        assert_eq!(host.counter("airlock.audit.dropped"), 5);
        assert!(vm.audit.borrow().is_empty());
        let log = host.logs.last().unwrap();
        assert!(log.contains("5 audit records not confirmed delivered") && log.contains("2000 ms"), "{log}");
        assert_eq!(vm.shutdown_progress(&mut host), Some(Shutdown::Done), "counted once");
        assert_eq!(host.counter("airlock.audit.dropped"), 5);
    }

    #[test]
    fn a_batch_in_flight_at_the_deadline_counts_as_dropped_its_delivery_unconfirmed() {
        let (vm, mut host) = vm(1000);
        queue(&vm, 3);
        vm.begin_shutdown(&mut host);
        assert!(vm.ship_audit(&mut host).is_some());
        host.now_ms = 1000;
        assert_eq!(vm.shutdown_progress(&mut host), Some(Shutdown::Done));
        assert_eq!(host.counter("airlock.audit.dropped"), 3);
    }

    #[test]
    fn the_last_flush_does_not_wait_out_a_retry_backoff() {
        let (vm, mut host) = vm(5000);
        queue(&vm, 1);
        for _ in 0..5 {
            host.now_ms += 60_000;
            assert!(vm.ship_audit(&mut host).is_some());
            vm.finish_audit_shipment(&mut host, Some(503));
        }
        assert!(vm.ship_audit(&mut host).is_none(), "backing off");
        assert_eq!(vm.begin_shutdown(&mut host), Shutdown::Flushing);
        assert!(vm.ship_audit(&mut host).is_some(), "shipped at once");
    }

    #[test]
    fn an_empty_queue_or_a_zero_bound_lets_the_vm_go_at_once() {
        let (vm_empty, mut host) = vm(5000);
        assert_eq!(vm_empty.begin_shutdown(&mut host), Shutdown::Done);
        assert!(host.callouts.is_empty());

        let (vm_zero, mut host) = vm(0);
        queue(&vm_zero, 2);
        assert_eq!(vm_zero.begin_shutdown(&mut host), Shutdown::Done);
        assert_eq!(host.counter("airlock.audit.dropped"), 2, "never silently");
    }
}
