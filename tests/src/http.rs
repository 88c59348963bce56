//! A small blocking HTTP client layer over `ureq` tuned for proxy tests: error statuses
//! are answers, not errors; redirects are not followed (a redirect is something to
//! assert on); no compression is negotiated (so a compressed body is the upstream's doing).

use std::time::Duration;

use serde_json::Value;

/// Longest body [`send`] reads.
pub const MAX_REPLY_BYTES: u64 = 128 * 1024 * 1024;

/// An agent for talking to Envoy, the upstream or the admin API. Timeout 60 s overall.
pub fn agent() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(60))
}

/// Like [`agent`] with another overall timeout (held approvals need minutes).
pub fn agent_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A fully read answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; the error shows status and body.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("status {} body is not JSON ({e}): {}", self.status, self.text()))
    }
}

/// Sends one request. `body: None` sends no body at all (no content-length either).
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Reply, String> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let result = match body {
        Some(bytes) => builder.body(bytes.to_vec()).map_err(|e| e.to_string()).map(|r| agent.run(r)),
        None => builder.body(()).map_err(|e| e.to_string()).map(|r| agent.run(r)),
    };
    let mut response =
        result.map_err(|e| format!("{method} {url}: bad request: {e}"))?.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_REPLY_BYTES)
        .read_to_vec()
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    Ok(Reply { status, headers, body })
}
