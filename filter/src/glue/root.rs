//! The root context: validates the plugin config once, defines the counters, keeps the
//! remote JWKS fresh and ships audit batches, both on its timer.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::abi;
use super::envoy_host::{callout_response, EnvoyHost, CRITICAL, INFO};
use super::http::AirlockHttp;
use crate::config::Config;
use crate::flow::RequestFlow;
use crate::stats::Stats;
use crate::vm_state::VmState;

/// The timer's period: JWKS refreshes are due in seconds, audit flushes in
/// `audit.flush_interval_ms`; both check their own due time on every tick.
const MAX_TICK_MS: u64 = 1000;

#[derive(Default)]
pub struct AirlockRoot {
    vm: Option<Rc<VmState>>,
    /// The callout carrying the audit batch in flight, to tell its answer from a JWKS one.
    audit_call: Option<u32>,
}

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
        } else {
            vm.auth.finish_fetch(&mut EnvoyHost, status, body.as_deref());
        }
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
        let tick_ms = match (&config.auth.remote, &config.audit) {
            (_, Some(audit)) => audit.flush_interval_ms.min(MAX_TICK_MS),
            (Some(_), None) => MAX_TICK_MS,
            (None, None) => 0,
        };
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
        vm.auth.refresh(&mut host);
        if self.audit_call.is_none() {
            self.audit_call = vm.ship_audit(&mut host);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let vm = self.vm.as_ref()?;
        Some(Box::new(AirlockHttp::new(RequestFlow::new(Rc::clone(vm)))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
