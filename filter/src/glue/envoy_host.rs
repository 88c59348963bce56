//! `Host` and `Runtime` over Envoy's host calls (through `abi`, which never panics).
//! Host errors read as "absent"; failed writes are ignored because the flow has already
//! decided what is safe: a refused header write can only make the upstream reject.

use std::time::Duration;

use super::abi;
use crate::headers::HeaderList;
use crate::host::{Callout, Host, Level, Runtime};
use crate::stats::{DefineCounter, MetricId};

/// Stateless: Envoy knows which context is current.
pub struct EnvoyHost;

/// proxy-wasm log levels: trace 0, debug 1, info 2, warn 3, error 4, critical 5.
fn level(level: Level) -> u32 {
    match level {
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warn => 3,
    }
}

pub const CRITICAL: u32 = 5;
pub const INFO: u32 = 2;

impl Runtime for EnvoyHost {
    fn now_unix_ms(&self) -> u64 {
        abi::now_nanos().map_or(0, |n| n / 1_000_000)
    }

    fn dispatch(&mut self, call: &Callout) -> Result<u32, String> {
        let mut headers = vec![(":method", call.method), (":path", call.path), (":authority", call.authority)];
        headers.extend_from_slice(call.headers);
        // The SDK's dispatch registers the callout with its dispatcher, which routes the
        // answer back to this context; its only panic is for statuses Envoy never returns.
        proxy_wasm::hostcalls::dispatch_http_call(
            call.cluster,
            headers,
            call.body,
            vec![],
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|status| format!("host refused the call ({status:?}); is cluster `{}` defined?", call.cluster))
    }

    fn increment(&mut self, metric: MetricId, by: u64) {
        abi::increment(metric, i64::try_from(by).unwrap_or(i64::MAX));
    }

    fn log_enabled(&self, wanted: Level) -> bool {
        abi::log_level().is_none_or(|current| current <= level(wanted))
    }

    fn log(&mut self, wanted: Level, message: &str) {
        abi::log(level(wanted), message);
    }

    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        abi::shared_data(key)
    }

    fn shared_set(&mut self, key: &str, value: &[u8], version: Option<u32>) -> Result<bool, String> {
        abi::set_shared_data(key, value, version.unwrap_or(0))
            .map_err(|status| format!("host refused to store shared data `{key}` (status {status})"))
    }
}

impl Host for EnvoyHost {
    fn request_headers(&self) -> HeaderList {
        abi::headers(abi::MAP_REQUEST_HEADERS)
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        abi::set_header(abi::MAP_REQUEST_HEADERS, name, value);
    }

    fn remove_request_header(&mut self, name: &str) {
        abi::remove_header(abi::MAP_REQUEST_HEADERS, name);
    }

    fn request_body(&self, len: usize) -> Option<Vec<u8>> {
        abi::buffer(abi::BUFFER_REQUEST_BODY, len)
    }

    fn response_header(&self, name: &str) -> Option<String> {
        abi::header(abi::MAP_RESPONSE_HEADERS, name)
    }

    fn remove_response_header(&mut self, name: &str) {
        abi::remove_header(abi::MAP_RESPONSE_HEADERS, name);
    }

    fn set_response_header(&mut self, name: &str, value: &str) {
        abi::set_header(abi::MAP_RESPONSE_HEADERS, name, value);
    }

    fn response_body(&self, len: usize) -> Option<Vec<u8>> {
        abi::buffer(abi::BUFFER_RESPONSE_BODY, len)
    }

    fn set_response_body(&mut self, len: usize, body: &[u8]) {
        abi::set_buffer(abi::BUFFER_RESPONSE_BODY, len, body);
    }

    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        abi::send_response(status, headers, body);
    }

    fn resume_request(&mut self) {
        abi::resume_request();
    }

    fn upstream_cluster(&self) -> Option<String> {
        let bytes = abi::property(&["xds", "cluster_name"]).or_else(|| abi::property(&["cluster_name"]))?;
        String::from_utf8(bytes).ok()
    }
}

impl DefineCounter for EnvoyHost {
    fn define_counter(&mut self, name: &str) -> Option<MetricId> {
        abi::define_counter(name)
    }
}

/// Reads the answer of a callout: `None` status when the call failed or timed out
/// (Envoy then calls back without a `:status`).
pub fn callout_response(body_size: usize) -> (Option<u32>, Option<Vec<u8>>) {
    let status = abi::header(abi::MAP_CALLOUT_RESPONSE_HEADERS, ":status").and_then(|s| s.parse().ok());
    let body = if body_size == 0 { None } else { abi::buffer(abi::BUFFER_CALLOUT_RESPONSE_BODY, body_size) };
    (status, body)
}
