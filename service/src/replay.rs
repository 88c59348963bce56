//! Re-sending a recorded request to another target (a staging copy of the upstream) and
//! comparing the status with the record: shared by `airlock replay` and the console's
//! replay action (`POST /v1/sessions/{id}/replay`, whose target comes from the service
//! config's `[replay]`, never from the caller, so the service cannot be aimed anywhere).
//!
//! What is sent is what was recorded: method, path and the *masked* request body.

use airlock_wire::Decision;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config_error::ConfigError;

/// `[replay]` of the service config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// Base URL the console's replays go to, e.g. `http://staging-api:8080`.
    pub target: String,
}

impl ReplayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.target.starts_with("http://") || self.target.starts_with("https://")) {
            return Err(ConfigError::new("replay.target", "must be an http:// or https:// URL"));
        }
        Ok(())
    }
}

/// One replayed request and how it compares with the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayLine {
    pub seq: i64,
    pub method: String,
    pub path: String,
    pub recorded: i64,
    /// `None` when the target could not be reached.
    pub replayed: Option<u16>,
    /// Why the target could not be reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReplayLine {
    pub fn differs(&self) -> bool {
        self.replayed.map(i64::from) != Some(self.recorded)
    }
}

/// Whether a recorded request went to the upstream. The rest (refused by the filter for
/// any reason, or never decided) are not replayed unless asked for, so a replay cannot run
/// on staging what was blocked in production.
pub fn reached_upstream(decision: &str) -> bool {
    matches!(Decision::parse(decision), Some(Decision::Allow | Decision::Approved | Decision::DryRunAllow))
}

/// An HTTP client for replays: no redirects followed, a 30 s timeout.
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.without_url().to_string())
}

/// Sends record `r` (a timeline entry) to `target`; `Err` names a record that cannot be
/// sent (an invalid method).
pub async fn replay_record(
    http: &reqwest::Client,
    target: &str,
    headers: &reqwest::header::HeaderMap,
    r: &Value,
) -> Result<ReplayLine, String> {
    let seq = r["seq"].as_i64().unwrap_or_default();
    let method_text = r["method"].as_str().unwrap_or("GET");
    let method =
        Method::from_bytes(method_text.as_bytes()).map_err(|_| format!("record {seq} has an invalid method"))?;
    let path = r["path"].as_str().unwrap_or("/").to_string();
    let body = r["request_body"].as_str().unwrap_or_default().to_string();
    let mut req = http.request(method, format!("{}{path}", target.trim_end_matches('/'))).headers(headers.clone());
    if !body.is_empty() {
        let trimmed = body.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && !headers.contains_key(reqwest::header::CONTENT_TYPE)
        {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        req = req.body(body);
    }
    let (replayed, error) = match req.send().await {
        Ok(resp) => (Some(resp.status().as_u16()), None),
        Err(e) => (None, Some(e.without_url().to_string())),
    };
    Ok(ReplayLine {
        seq,
        method: method_text.to_string(),
        path,
        recorded: r["status"].as_i64().unwrap_or_default(),
        replayed,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_reached_the_upstream_are_replayed_by_default() {
        for d in ["allow", "approved", "dry_run_allow"] {
            assert!(reached_upstream(d), "{d}");
        }
        for d in [
            "denied_by_rule",
            "denied_by_default",
            "unauthenticated",
            "approval_denied",
            "approval_pending",
            "incomplete",
            "something-else",
        ] {
            assert!(!reached_upstream(d), "{d}");
        }
    }

    #[test]
    fn unreachable_target_counts_as_a_difference() {
        let l =
            ReplayLine { seq: 1, method: "GET".into(), path: "/".into(), recorded: 200, replayed: None, error: None };
        assert!(l.differs());
        let same = ReplayLine { replayed: Some(200), ..l };
        assert!(!same.differs());
    }
}
