//! A host that answers like Envoy for one request at a time and records what the filter
//! did: replies, callouts, counters, logs, and how many times each host call was made
//! (each one a crossing between the Wasm VM and Envoy).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::{Callout, Host, Level, Runtime};
use crate::headers::HeaderList;
use crate::stats::{DefineCounter, MetricId};

/// Status, headers and body of a reply the filter sent.
pub type SentReply = (u32, Vec<(String, String)>, Vec<u8>);

/// Shared data as Envoy keeps it: key → (value, version).
pub type SharedData = Rc<RefCell<HashMap<String, (Vec<u8>, u32)>>>;

#[derive(Default)]
pub struct MockHost {
    pub request_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Vec<u8>,
    pub reply: Option<SentReply>,
    pub resumed: usize,
    pub cluster: Option<String>,
    pub now_ms: u64,
    pub callouts: Vec<(String, String)>,
    pub callout_bodies: Vec<Vec<u8>>,
    /// The headers of each callout, in order.
    pub callout_headers: Vec<Vec<(String, String)>>,
    /// Like Envoy once the headers callback returned Continue: header changes are
    /// silently lost.
    pub request_headers_frozen: bool,
    pub fail_dispatch: bool,
    pub counters: HashMap<MetricId, u64>,
    /// Counter names as defined at configure time.
    pub metric_names: HashMap<String, MetricId>,
    /// Messages below this level are not enabled (and not recorded).
    pub log_level: Level,
    pub logs: Vec<String>,
    /// Host calls made, by the name of the proxy-wasm call they stand for.
    pub calls: RefCell<BTreeMap<&'static str, u64>>,
    /// Tests that model several workers hand the same map to several mocks.
    pub shared: SharedData,
    /// Envoy refuses every shared-data write.
    pub fail_shared_set: bool,
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

    /// A counter by its full name (`airlock.denied`).
    pub fn counter(&self, name: &str) -> u64 {
        self.metric_names.get(name).map_or(0, |id| self.count(*id))
    }

    fn called(&self, what: &'static str) {
        *self.calls.borrow_mut().entry(what).or_default() += 1;
    }
}

impl DefineCounter for MockHost {
    fn define_counter(&mut self, name: &str) -> Option<MetricId> {
        let next = self.metric_names.len() as MetricId + 1;
        Some(*self.metric_names.entry(name.to_string()).or_insert(next))
    }
}

impl Host for MockHost {
    fn request_headers(&self) -> HeaderList {
        self.called("get_request_headers (all)");
        // Sized up front, like the Wasm glue's parse of Envoy's serialized map.
        let bytes = self.request_headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        let mut list = HeaderList::with_capacity(self.request_headers.len(), bytes);
        for (n, v) in &self.request_headers {
            list.push(n, v);
        }
        list
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        self.called("set_request_header");
        if self.request_headers_frozen {
            return;
        }
        self.request_headers.retain(|(n, _)| n != name);
        self.request_headers.push((name.to_string(), value.to_string()));
    }

    fn remove_request_header(&mut self, name: &str) {
        self.called("remove_request_header");
        if self.request_headers_frozen {
            return;
        }
        self.request_headers.retain(|(n, _)| n != name);
    }

    fn request_body(&self, len: usize) -> Option<Vec<u8>> {
        self.called("get_request_body");
        Some(self.request_body.get(..len.min(self.request_body.len()))?.to_vec())
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.called("get_response_header");
        self.response_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    fn remove_response_header(&mut self, name: &str) {
        self.called("remove_response_header");
        self.response_headers.retain(|(n, _)| n != name);
    }

    fn set_response_header(&mut self, name: &str, value: &str) {
        self.called("set_response_header");
        self.response_headers.retain(|(n, _)| n != name);
        self.response_headers.push((name.to_string(), value.to_string()));
    }

    fn response_body(&self, len: usize) -> Option<Vec<u8>> {
        self.called("get_response_body");
        Some(self.response_body.get(..len.min(self.response_body.len()))?.to_vec())
    }

    fn set_response_body(&mut self, _len: usize, body: &[u8]) {
        self.called("set_response_body");
        self.response_body = body.to_vec();
    }

    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.called("send_local_response");
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        self.reply = Some((status, headers, body.to_vec()));
    }

    fn resume_request(&mut self) {
        self.called("resume_request");
        self.resumed += 1;
    }

    fn upstream_cluster(&self) -> Option<String> {
        self.called("get_property (cluster)");
        self.cluster.clone()
    }
}

impl Runtime for MockHost {
    fn now_unix_ms(&self) -> u64 {
        self.called("get_current_time");
        self.now_ms
    }

    fn dispatch(&mut self, call: &Callout) -> Result<u32, String> {
        self.called("dispatch_http_call");
        if self.fail_dispatch {
            return Err("cluster not found".into());
        }
        self.callouts.push((call.cluster.to_string(), call.path.to_string()));
        self.callout_bodies.push(call.body.unwrap_or_default().to_vec());
        self.callout_headers.push(call.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect());
        Ok(self.callouts.len() as u32)
    }

    fn increment(&mut self, metric: MetricId, by: u64) {
        self.called("increment_metric");
        *self.counters.entry(metric).or_default() += by;
    }

    fn log_enabled(&self, level: Level) -> bool {
        self.called("get_log_level");
        level >= self.log_level
    }

    fn log(&mut self, level: Level, message: &str) {
        self.called("log");
        if level >= self.log_level {
            self.logs.push(message.to_string());
        }
    }

    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.called("get_shared_data");
        self.shared.borrow().get(key).cloned()
    }

    fn shared_set(&mut self, key: &str, value: &[u8], version: Option<u32>) -> Result<bool, String> {
        self.called("set_shared_data");
        if self.fail_shared_set {
            return Err(format!("host refused to store shared data `{key}` (status 2)"));
        }
        let mut shared = self.shared.borrow_mut();
        // Envoy's rules: a version is checked only for a key that exists; each write
        // gives the key a new version.
        let current = shared.get(key).map(|(_, v)| *v);
        if let (Some(want), Some(have)) = (version, current) {
            if want != have {
                return Ok(false);
            }
        }
        shared.insert(key.to_string(), (value.to_vec(), current.unwrap_or(0) + 1));
        Ok(true)
    }
}
