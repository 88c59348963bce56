//! What the request logic needs from the proxy, as a small trait.
//!
//! The proxy-wasm adapter (`glue`) implements it over Envoy's host calls; unit tests use a
//! mock. Keeping the logic on this side of the trait is what lets the whole request life
//! (headers → body → callouts → response) be tested natively.

use crate::headers::HeaderList;
use crate::stats::MetricId;

/// What the proxy should do after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    #[default]
    Debug,
    Info,
    Warn,
}

/// An HTTP call to an Envoy cluster (`dispatch_http_call`).
pub struct Callout<'a> {
    pub cluster: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
    pub timeout_ms: u64,
}

/// What any context (root or request) needs from the proxy.
pub trait Runtime {
    fn now_unix_ms(&self) -> u64;
    fn now_unix_secs(&self) -> u64 {
        self.now_unix_ms() / 1000
    }
    fn dispatch(&mut self, call: &Callout) -> Result<u32, String>;
    fn increment(&mut self, metric: MetricId, by: u64);
    fn log_enabled(&self, level: Level) -> bool;
    fn log(&mut self, level: Level, message: &str);
    /// A value shared by every worker thread's VM in this proxy (proxy-wasm shared data),
    /// with its version. Lost when Envoy restarts; per proxy, never across replicas.
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes a shared value if its version is still `version` (`None`: unconditionally).
    /// `Ok(false)`: another worker wrote first; read again and retry.
    fn shared_set(&mut self, key: &str, value: &[u8], version: Option<u32>) -> Result<bool, String>;
}

/// What a request context needs on top: the request and response it is handling.
pub trait Host: Runtime {
    /// All request headers, names lower-case: one host call, so the flow reads them once.
    fn request_headers(&self) -> HeaderList;
    fn set_request_header(&mut self, name: &str, value: &str);
    fn remove_request_header(&mut self, name: &str);
    fn request_body(&self, len: usize) -> Option<Vec<u8>>;

    fn response_header(&self, name: &str) -> Option<String>;
    fn remove_response_header(&mut self, name: &str);
    /// Only takes effect while the response headers are held (paused).
    fn set_response_header(&mut self, name: &str, value: &str);
    fn response_body(&self, len: usize) -> Option<Vec<u8>>;
    fn set_response_body(&mut self, len: usize, body: &[u8]);

    /// Answers the client directly with a JSON body.
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    fn resume_request(&mut self);

    /// The Envoy cluster the route sends this request to.
    fn upstream_cluster(&self) -> Option<String>;
}

/// A recording host: the unit tests' and the native profiler's stand-in for Envoy.
#[cfg(any(test, feature = "test-support"))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
pub mod mock;
