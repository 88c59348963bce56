//! `airlock replay`: re-sends a recorded session's requests to another target (a staging
//! copy of the upstream) and reports where the response status differs from the record.
//!
//! What is sent is what was recorded (see [`crate::replay`], shared with the console).
//! Records of requests the filter refused (or never decided) are skipped unless asked for,
//! so a replay cannot run on staging what was blocked in production.

use super::client::{encode, Client};
use super::CliError;
use crate::replay::{http_client, reached_upstream, replay_record};

pub struct ReplayOptions {
    pub session_id: String,
    pub target: String,
    /// Extra `name: value` headers for the target (e.g. staging credentials).
    pub headers: Vec<String>,
    pub include_denied: bool,
}

fn parse_header(h: &str) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), CliError> {
    let bad = |problem: &str| CliError::BadArgument { arg: "--header".into(), problem: problem.into() };
    let (name, value) = h.split_once(':').ok_or_else(|| bad("expected `name: value`"))?;
    let name =
        reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("invalid header name"))?;
    let value = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|_| bad("invalid header value"))?;
    Ok((name, value))
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
    let http = http_client().map_err(|detail| CliError::Unreachable { what: "HTTP client".into(), detail })?;
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
        let line = replay_record(&http, target, &headers, r).await.map_err(CliError::BadAnswer)?;
        if let Some(e) = &line.error {
            eprintln!("#{}: {e}", line.seq);
        }
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
}
