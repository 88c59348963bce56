//! The proxy-wasm adapter: the only code that talks to Envoy. One small struct per
//! context (`root`, `http`) and one `Host` implementation over the host calls; every
//! decision lives in the host-independent modules.
//!
//! Host calls go through `abi`, our own non-panicking wrappers: the SDK's helpers panic on
//! unexpected host statuses and on non-UTF-8 header values, and a panic kills the VM.

mod abi;
mod envoy_host;
mod http;
mod root;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::AirlockRoot::new(context_id))
    });
}}
