//! The root context: validates the plugin config once, defines the counters, and keeps
//! the remote JWKS fresh on a timer.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::abi;
use super::envoy_host::{callout_response, EnvoyHost, CRITICAL, INFO};
use super::http::AirlockHttp;
use crate::config::Config;
use crate::flow::RequestFlow;
use crate::host::Runtime;
use crate::stats::Stats;
use crate::vm_state::{FetchReason, VmState};

#[derive(Default)]
pub struct AirlockRoot {
    vm: Option<Rc<VmState>>,
}

impl Context for AirlockRoot {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if let Some(vm) = &self.vm {
            let (status, body) = callout_response(body_size);
            vm.finish_key_fetch(&mut EnvoyHost, status, body.as_deref());
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
        let remote = config.auth.remote.is_some();
        self.vm = Some(Rc::new(VmState::new(config, stats)));
        if remote {
            abi::set_tick_period_ms(1000);
        }
        abi::log(INFO, "airlock: plugin configured");
        true
    }

    fn on_tick(&mut self) {
        let Some(vm) = &self.vm else { return };
        let mut host = EnvoyHost;
        let now = host.now_unix_secs();
        if vm.may_fetch(FetchReason::Refresh, now) {
            if let Err(problem) = vm.start_key_fetch(&mut host) {
                host.log(crate::host::Level::Warn, &format!("airlock: {problem}"));
            }
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
