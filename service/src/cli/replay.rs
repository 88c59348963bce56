//! `airlock replay`: re-sends a recorded session's requests to another target (a staging
//! copy of the upstream) and reports where the response status differs from the record.
//!
//! What is sent is what was recorded: method, path and the *masked* request body. Records
//! of requests the filter refused (or never decided) are skipped unless asked for, so a
//! replay cannot run on staging what was blocked in production.

use std::time::Duration;

use airlock_wire::Decision;
use reqwest::Method;
use serde_json::Value;

use super::client::{encode, Client};
use super::CliError;

pub struct ReplayOptions {
    pub session_id: String,
    pub target: String,
    /// Extra `name: value` headers for the target (e.g. staging credentials).
    pub headers: Vec<String>,
    pub include_denied: bool,
}

/// One replayed request and how it compares with the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayLine {
    pub seq: i64,
    pub method: String,
    pub path: String,
    pub recorded: i64,
    /// `None` when the target could not be reached.
    pub replayed: Option<u16>,
}

impl ReplayLine {
    pub fn differs(&self) -> bool {
        self.replayed.map(i64::from) != Some(self.recorded)
    }
}

fn parse_header(h: &str) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), CliError> {
    let bad = |problem: &str| CliError::BadArgument { arg: "--header".into(), problem: problem.into() };
    let (name, value) = h.split_once(':').ok_or_else(|| bad("expected `name: value`"))?;
    let name =
        reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("invalid header name"))?;
    let value = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|_| bad("invalid header value"))?;
    Ok((name, value))
}

/// Whether a recorded request went to the upstream. The rest (refused by the filter for
/// any reason, or never decided) are what `--include-denied` is about.
fn reached_upstream(decision: &str) -> bool {
    matches!(Decision::parse(decision), Some(Decision::Allow | Decision::Approved | Decision::DryRunAllow))
}

/// Runs the replay and prints one line per request plus a summary; returns whether any
/// status differed.
pub async fn replay(client: &Client, opts: &ReplayOptions) -> Result<bool, CliError> {
    let target = opts.target.trim_end_matches('/');
    if !(target.starts_with("http://") || target.starts_with("https://")) {
        return Err(CliError::BadArgument {
            arg: "--target".into(),
            problem: "must be an http:// or https:// URL".into(),
        });
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &opts.headers {
        let (n, v) = parse_header(h)?;
        headers.append(n, v);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CliError::Unreachable { what: "HTTP client".into(), detail: e.without_url().to_string() })?;
    let session = client.get(&format!("/v1/sessions/{}", encode(&opts.session_id))).await?;
    let records = session["records"].as_array().ok_or_else(|| CliError::BadAnswer("no `records` list".into()))?;
    let mut lines = Vec::new();
    let mut skipped = 0usize;
    for r in records {
        let decision = r["decision"].as_str().unwrap_or_default();
        if !reached_upstream(decision) && !opts.include_denied {
            skipped += 1;
            continue;
        }
        let line = replay_one(&http, target, &headers, r).await?;
        println!(
            "#{:<5} {:<7} {:<40} recorded {:>3}  replay {:>3}  {}",
            line.seq,
            line.method,
            line.path,
            line.recorded,
            line.replayed.map_or_else(|| "ERR".to_string(), |s| s.to_string()),
            if line.differs() { "DIFF" } else { "same" }
        );
        lines.push(line);
    }
    let differing = lines.iter().filter(|l| l.differs()).count();
    println!(
        "replayed {} requests of session {} against {target}: {differing} differ, {skipped} denied skipped",
        lines.len(),
        opts.session_id
    );
    Ok(differing > 0)
}

async fn replay_one(
    http: &reqwest::Client,
    target: &str,
    headers: &reqwest::header::HeaderMap,
    r: &Value,
) -> Result<ReplayLine, CliError> {
    let seq = r["seq"].as_i64().unwrap_or_default();
    let method_text = r["method"].as_str().unwrap_or("GET");
    let method = Method::from_bytes(method_text.as_bytes())
        .map_err(|_| CliError::BadAnswer(format!("record {seq} has an invalid method")))?;
    let path = r["path"].as_str().unwrap_or("/").to_string();
    let body = r["request_body"].as_str().unwrap_or_default().to_string();
    let mut req = http.request(method, format!("{target}{path}")).headers(headers.clone());
    if !body.is_empty() {
        let trimmed = body.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && !headers.contains_key(reqwest::header::CONTENT_TYPE)
        {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        req = req.body(body);
    }
    let replayed = match req.send().await {
        Ok(resp) => Some(resp.status().as_u16()),
        Err(e) => {
            eprintln!("#{seq}: {}", e.without_url());
            None
        }
    };
    Ok(ReplayLine {
        seq,
        method: method_text.to_string(),
        path,
        recorded: r["status"].as_i64().unwrap_or_default(),
        replayed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_value_headers() {
        let (n, v) = parse_header("Authorization: Bearer x").unwrap();
        assert_eq!(n.as_str(), "authorization");
        assert_eq!(v.to_str().unwrap(), "Bearer x");
        assert!(parse_header("no-colon").is_err());
    }

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
        let l = ReplayLine { seq: 1, method: "GET".into(), path: "/".into(), recorded: 200, replayed: None };
        assert!(l.differs());
        let same = ReplayLine { replayed: Some(200), ..l };
        assert!(!same.differs());
    }
}
