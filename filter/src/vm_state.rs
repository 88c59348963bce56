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
    /// Makes audit record ids unique across VMs and restarts: ingestion is idempotent by
    /// id, so two records must never share one.
    record_prefix: String,
    record_seq: Cell<u64>,
    audit_drops: Cell<u64>,
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
        VmState {
            secrets,
            config,
            stats,
            auth,
            holds: HoldWatch::default(),
            audit: RefCell::new(AuditQueue::default()),
            pins: RefCell::new(PinSync::default()),
            record_prefix: instance.to_string(),
            record_seq: Cell::new(0),
            audit_drops: Cell::new(0),
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

    /// Counts a dropped audit record; says whether to log it. Logged at the 1st, 2nd,
    /// 4th, 8th... drop so an outage under load is visible without flooding the log.
    pub fn note_audit_drop(&self) -> Option<u64> {
        let n = self.audit_drops.get() + 1;
        self.audit_drops.set(n);
        n.is_power_of_two().then_some(n)
    }
}
