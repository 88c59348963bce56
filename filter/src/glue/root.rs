//! The root context: validates the plugin config once, defines the counters, keeps the
//! remote JWKS fresh, ships audit batches and exchanges MCP tool pins with the control
//! service, all on its timer.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::abi;
use super::envoy_host::{callout_response, EnvoyHost, CRITICAL, INFO};
use super::http::AirlockHttp;
use crate::config::Config;
use crate::flow::RequestFlow;
use crate::hold::HoldBy;
use crate::host::Runtime;
use crate::pins::PinMode;
use crate::reply::{Code, Reply};
use crate::stats::Stats;
use crate::vm_state::{Shutdown, VmState};

/// The timer's longest period. JWKS refreshes and secret fetches check their own due
/// time on every tick; audit batches ship on every tick, so a record waits at most a
/// second (or `audit.flush_interval_ms`, when that is shorter) before it is shipped.
const MAX_TICK_MS: u64 = 1000;
/// The tick while OAuth tokens are cached: how late a refresh or a first fetch may start.
const OAUTH_TICK_MS: u64 = 200;
/// The timer's period while the VM ships its last records: retries and the deadline
/// (`audit.shutdown_flush_ms`) are checked this often.
const SHUTDOWN_TICK_MS: u32 = 100;

pub struct AirlockRoot {
    /// This root context's id, to switch back to after acting for a request context.
    context_id: u32,
    vm: Option<Rc<VmState>>,
    /// The callout carrying the audit batch in flight, to tell its answer from a key fetch's.
    audit_call: Option<u32>,
    /// The callouts reporting tool observations and reading the service's pins.
    pins_report: Option<u32>,
    pins_refresh: Option<u32>,
    /// Fetches of control-service secrets in flight, with the secret each is for.
    secret_calls: Vec<(u32, usize)>,
    /// OAuth token fetches in flight, with the client each is for.
    oauth_calls: Vec<(u32, usize)>,
    /// Refreshes of exchanged tokens in flight, with the upstream and subject token each
    /// is for.
    exchange_calls: Vec<(u32, usize, String)>,
}

impl AirlockRoot {
    pub fn new(context_id: u32) -> AirlockRoot {
        AirlockRoot {
            context_id,
            vm: None,
            audit_call: None,
            pins_report: None,
            pins_refresh: None,
            secret_calls: Vec::new(),
            oauth_calls: Vec::new(),
            exchange_calls: Vec::new(),
        }
    }

    /// Acts on where the last flush stands: ships the next batch, or tells Envoy the VM
    /// may go.
    fn follow_shutdown(&mut self, step: Shutdown) {
        let Some(vm) = &self.vm else { return };
        match step {
            Shutdown::Flushing if self.audit_call.is_none() => self.audit_call = vm.ship_audit(&mut EnvoyHost),
            Shutdown::Flushing => {}
            Shutdown::Done => {
                if abi::done() {
                    abi::log(INFO, "airlock: audit queue flushed; the VM may go");
                }
            }
        }
    }
}

/// Requests held for their body whose body never came, on a VM that has not yet seen
/// Envoy deliver one: the Wasm `PluginConfig` most likely lacks
/// `allow_on_headers_stop_iteration`. Each is answered 500 rather than left to hang.
fn answer_stalled_holds(vm: &VmState, root_context_id: u32) {
    let now = EnvoyHost.now_unix_ms();
    let stalled = vm.holds.overdue(now, vm.config.hold.first_body_timeout_ms);
    if stalled.is_empty() {
        return;
    }
    let reply = Reply::new(Code::Misconfigured, STALLED_HOLD);
    let body = reply.to_json(None);
    let headers = [
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
        ("x-airlock-code", Code::Misconfigured.as_str()),
    ];
    for id in &stalled {
        if abi::set_effective_context(*id) {
            abi::send_response(reply.status(), &headers, &body);
        }
    }
    abi::set_effective_context(root_context_id);
    abi::log(CRITICAL, &format!("airlock: {} held request(s) answered 500: {STALLED_HOLD}", stalled.len()));
}

const STALLED_HOLD: &str = "Envoy did not deliver the body of a request Airlock holds: set \
    `allow_on_headers_stop_iteration: true` in the Wasm PluginConfig (Envoy >= 1.35),
        or use `hold.by: buffer_filter` with Envoy's buffer filter right after Airlock";

impl Context for AirlockRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(vm) = &self.vm else { return };
        let (status, body) = callout_response(body_size);
        if self.audit_call == Some(token) {
            self.audit_call = None;
            let delivered = vm.finish_audit_shipment(&mut EnvoyHost, status);
            // Keep going while records wait: one batch per tick would cap shipping at
            // batch_size per flush interval, far below what a busy worker produces.
            if delivered {
                self.audit_call = vm.ship_audit(&mut EnvoyHost);
            }
            if let Some(step) = vm.shutdown_progress(&mut EnvoyHost) {
                self.follow_shutdown(step);
            }
        } else if self.pins_report == Some(token) {
            self.pins_report = None;
            vm.finish_pin_sync(&mut EnvoyHost, true, status, body.as_deref());
        } else if self.pins_refresh == Some(token) {
            self.pins_refresh = None;
            vm.finish_pin_sync(&mut EnvoyHost, false, status, body.as_deref());
        } else if let Some(at) = self.secret_calls.iter().position(|(call, _)| *call == token) {
            let (_, secret) = self.secret_calls.swap_remove(at);
            vm.finish_secret_fetch(&mut EnvoyHost, secret, status, body.as_deref());
        } else if let Some(at) = self.oauth_calls.iter().position(|(call, _)| *call == token) {
            let (_, client) = self.oauth_calls.swap_remove(at);
            vm.finish_oauth_fetch(&mut EnvoyHost, client, status, body.as_deref());
        } else if let Some(at) = self.exchange_calls.iter().position(|(call, ..)| *call == token) {
            let (_, exchange, subject_token) = self.exchange_calls.swap_remove(at);
            vm.finish_exchange_refresh(&mut EnvoyHost, (exchange, &subject_token), status, body.as_deref());
        } else {
            // A discovery answer dispatches the JWKS fetch, whose answer comes back here.
            vm.auth.finish_fetch(&mut EnvoyHost, token, status, body.as_deref());
        }
    }

    /// Envoy lets this root context go. `false` asks it to wait for `proxy_done`, sent
    /// once the queued audit records are delivered or `audit.shutdown_flush_ms` has passed.
    ///
    /// What Envoy 1.40 does with it (seen in `tests/e2e/audit_shutdown.rs` with wasm trace
    /// logs, and in proxy-wasm-cpp-host's `WasmBase::startShutdown`/`done`):
    /// - a plugin config replaced over LDS while the VM lives on (same code and
    ///   `vm_config`): called on each worker once the old filter chain has drained
    ///   (`--drain-time-s`); the context then waits in `pending_done_`, its timer ticks and
    ///   callouts are answered, and `proxy_done` lets it go. This is what the flush is for.
    /// - the VM itself going (last listener using it removed, code or `vm_config`
    ///   changed): called, but the VM is destroyed right after; nothing waits.
    /// - Envoy stopping (SIGTERM, `/quitquitquit`, the old epoch of a hot restart):
    ///   called after the worker's event loop has exited; a callout is accepted but never
    ///   sent, and the VM is destroyed at once. Envoy does not wait. Records survive a
    ///   stop only if shipped during the drain before it: the timer ships at least every
    ///   second until the process exits.
    fn on_done(&mut self) -> bool {
        let Some(vm) = &self.vm else { return true };
        let step = vm.begin_shutdown(&mut EnvoyHost);
        if step == Shutdown::Done {
            return true;
        }
        abi::set_tick_period_ms(SHUTDOWN_TICK_MS);
        self.follow_shutdown(step);
        false
    }
}

impl RootContext for AirlockRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = abi::buffer(abi::BUFFER_PLUGIN_CONFIGURATION, usize::MAX).unwrap_or_default();
        let config = match Config::from_json(&bytes, &|name| std::env::var(name).ok()) {
            Ok(config) => config,
            Err(e) => {
                // Returning false makes Envoy refuse the plugin (and the listener with it).
                abi::log(CRITICAL, &e.to_string());
                return false;
            }
        };
        let Some(stats) = Stats::define(&mut EnvoyHost, &config) else {
            abi::log(CRITICAL, "airlock: the host refused to define counters");
            return false;
        };
        // The hold watch needs the timer too: a request held on an Envoy that never
        // delivers its body must be answered within `first_body_timeout_ms` (+ a tick).
        let watch_holds = config.hold.by == HoldBy::Envoy;
        // Pins are read back on the timer, and observations reported on it.
        let sync_pins = config.mcp.pin_tools != PinMode::Off;
        // Secrets the control service holds are fetched, and refreshed, on the timer.
        let fetch_secrets = !config.upstreams.control_secrets.is_empty();
        // So are OAuth tokens, at a finer tick: a refresh due at 80% of a short lifetime
        // must not wait a whole second.
        // Exchanged tokens used past 80% of their life are refreshed on the same tick.
        let fetch_tokens = !config.upstreams.oauth_clients.is_empty() || !config.upstreams.token_exchanges.is_empty();
        let tick_ms = match (&config.auth.remote, &config.audit) {
            (_, Some(audit)) => audit.flush_interval_ms.min(MAX_TICK_MS),
            (Some(_), None) => MAX_TICK_MS,
            (None, None) if watch_holds || sync_pins || fetch_secrets || fetch_tokens => MAX_TICK_MS,
            (None, None) => 0,
        };
        let tick_ms = if fetch_tokens { tick_ms.min(OAUTH_TICK_MS) } else { tick_ms };
        // Start time plus a random value (WASI `random_get`, behind `RandomState`): VMs of
        // the same Envoy start within the same instant.
        let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
        let instance = format!("{:x}-{random:x}", abi::now_nanos().unwrap_or_default());
        self.vm = Some(Rc::new(VmState::new(config, stats, &instance)));
        if tick_ms > 0 {
            abi::set_tick_period_ms(u32::try_from(tick_ms).unwrap_or(1000));
        }
        abi::log(INFO, "airlock: plugin configured");
        true
    }

    fn on_tick(&mut self) {
        let Some(vm) = &self.vm else { return };
        let mut host = EnvoyHost;
        // Going away: only the audit queue still matters.
        if let Some(step) = vm.shutdown_progress(&mut host) {
            self.follow_shutdown(step);
            return;
        }
        vm.auth.refresh(&mut host);
        if self.audit_call.is_none() {
            self.audit_call = vm.ship_audit(&mut host);
        }
        if self.pins_report.is_none() {
            self.pins_report = vm.sync_pins(&mut host, true);
        }
        if self.pins_refresh.is_none() {
            self.pins_refresh = vm.sync_pins(&mut host, false);
        }
        self.secret_calls.extend(vm.refresh_secrets(&mut host));
        self.oauth_calls.extend(vm.refresh_oauth(&mut host));
        self.exchange_calls.extend(vm.refresh_exchanged(&mut host));
        // Last: answering a held request switches the effective context to it.
        answer_stalled_holds(vm, self.context_id);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let vm = self.vm.as_ref()?;
        Some(Box::new(AirlockHttp::new(RequestFlow::new(Rc::clone(vm), context_id))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
