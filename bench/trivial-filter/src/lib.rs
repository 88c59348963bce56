//! The benchmark floor for Wasm filters: a proxy-wasm HTTP filter that reads one request
//! header per request and lets every request through.
//!
//! `scripts/bench.sh` loads it into Envoy to measure what running *any* Rust filter in
//! Envoy's V8 runtime costs (VM entry per callback, the SDK's context dispatch, one host
//! call that copies a string out of Envoy), so that Airlock's own cost can be read as the
//! difference between the Airlock variant and this one.
//!
//! It deliberately does nothing with the value: a filter that branched on it would add
//! work that is not part of the floor. The host call itself cannot be optimised away
//! (it crosses into Envoy), so the read is real.
//!
//! The crate is empty when compiled natively (workspace builds, clippy): the proxy-wasm
//! SDK is only a dependency for wasm32.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, LogLevel};

    /// The header read on every request; the bench load sends it (the bearer token), so
    /// the host call copies a realistic ~500-byte value, as Airlock's token read does.
    const HEADER: &str = "authorization";

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TrivialRoot) });
    }}

    struct TrivialRoot;

    impl Context for TrivialRoot {}

    impl RootContext for TrivialRoot {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(ReadOneHeader))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct ReadOneHeader;

    impl Context for ReadOneHeader {}

    impl HttpContext for ReadOneHeader {
        fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
            // The bytes variant: the String one panics on a non-UTF-8 value, which a
            // client controls. (The SDK still panics on a host status other than
            // Ok/NotFound, which no request can cause.) `black_box` only documents that
            // the value is deliberately unused; the host call happens regardless.
            let _value = std::hint::black_box(self.get_http_request_header_bytes(HEADER));
            Action::Continue
        }
    }
}
