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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
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
    fn response_body(&self, len: usize) -> Option<Vec<u8>>;
    fn set_response_body(&mut self, len: usize, body: &[u8]);

    /// Answers the client directly with a JSON body.
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    fn resume_request(&mut self);

    /// The Envoy cluster the route sends this request to.
    fn upstream_cluster(&self) -> Option<String>;
}

#[cfg(test)]
pub mod mock {
    //! A recording host for unit tests of the request flow.
    use super::*;
    use std::collections::HashMap;

    /// Status, headers and body of a reply the filter sent.
    pub type SentReply = (u32, Vec<(String, String)>, Vec<u8>);

    #[derive(Default)]
    pub struct MockHost {
        pub request_headers: Vec<(String, String)>,
        pub request_body: Vec<u8>,
        pub response_headers: Vec<(String, String)>,
        pub response_body: Vec<u8>,
        pub reply: Option<SentReply>,
        pub resumed: usize,
        pub cluster: Option<String>,
        pub now: u64,
        pub callouts: Vec<(String, String)>,
        pub callout_bodies: Vec<Vec<u8>>,
        /// Like Envoy once the headers callback returned Continue: header changes are
        /// silently lost.
        pub request_headers_frozen: bool,
        pub fail_dispatch: bool,
        pub counters: HashMap<MetricId, u64>,
        pub logs: Vec<String>,
    }

    impl MockHost {
        pub fn reply_json(&self) -> serde_json::Value {
            let (_, _, body) = self.reply.as_ref().expect("no reply was sent");
            serde_json::from_slice(body).unwrap()
        }
        pub fn reply_status(&self) -> Option<u32> {
            self.reply.as_ref().map(|(s, _, _)| *s)
        }
        pub fn header(&self, name: &str) -> Option<&str> {
            self.request_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }
        pub fn count(&self, id: MetricId) -> u64 {
            self.counters.get(&id).copied().unwrap_or(0)
        }
    }

    impl Host for MockHost {
        fn request_headers(&self) -> HeaderList {
            self.request_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
        }
        fn set_request_header(&mut self, name: &str, value: &str) {
            if self.request_headers_frozen {
                return;
            }
            self.remove_request_header(name);
            self.request_headers.push((name.to_string(), value.to_string()));
        }
        fn remove_request_header(&mut self, name: &str) {
            if self.request_headers_frozen {
                return;
            }
            self.request_headers.retain(|(n, _)| n != name);
        }
        fn request_body(&self, len: usize) -> Option<Vec<u8>> {
            Some(self.request_body[..len.min(self.request_body.len())].to_vec())
        }
        fn response_header(&self, name: &str) -> Option<String> {
            self.response_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        }
        fn remove_response_header(&mut self, name: &str) {
            self.response_headers.retain(|(n, _)| n != name);
        }
        fn response_body(&self, len: usize) -> Option<Vec<u8>> {
            Some(self.response_body[..len.min(self.response_body.len())].to_vec())
        }
        fn set_response_body(&mut self, _len: usize, body: &[u8]) {
            self.response_body = body.to_vec();
        }
        fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
            let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            self.reply = Some((status, headers, body.to_vec()));
        }
        fn resume_request(&mut self) {
            self.resumed += 1;
        }
        fn upstream_cluster(&self) -> Option<String> {
            self.cluster.clone()
        }
    }

    impl Runtime for MockHost {
        fn now_unix_ms(&self) -> u64 {
            self.now * 1000
        }
        fn dispatch(&mut self, call: &Callout) -> Result<u32, String> {
            if self.fail_dispatch {
                return Err("cluster not found".into());
            }
            self.callouts.push((call.cluster.to_string(), call.path.to_string()));
            self.callout_bodies.push(call.body.unwrap_or_default().to_vec());
            Ok(self.callouts.len() as u32)
        }
        fn increment(&mut self, metric: MetricId, by: u64) {
            *self.counters.entry(metric).or_default() += by;
        }
        fn log_enabled(&self, _level: Level) -> bool {
            true
        }
        fn log(&mut self, _level: Level, message: &str) {
            self.logs.push(message.to_string());
        }
    }
}
