//! A small JSON-over-HTTP client for the service's approver and audit APIs.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::CliError;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Client, CliError> {
        let token = token.filter(|t| !t.trim().is_empty()).ok_or(CliError::NoToken)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Unreachable { what: "HTTP client".into(), detail: e.without_url().to_string() })?;
        Ok(Client { base: base.trim_end_matches('/').to_string(), token: token.trim().to_string(), http })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CliError::Unreachable { what: self.base.clone(), detail: e.without_url().to_string() })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Unreachable { what: self.base.clone(), detail: e.without_url().to_string() })?;
        let value: Value =
            serde_json::from_str(&text).map_err(|_| CliError::BadAnswer(format!("HTTP {status}, not JSON")))?;
        if !status.is_success() {
            let err = &value["error"];
            return Err(CliError::Api {
                status: status.as_u16(),
                code: err["code"].as_str().unwrap_or("unknown").to_string(),
                message: err["message"].as_str().unwrap_or("no message").to_string(),
            });
        }
        Ok(value)
    }
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(encode("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(encode("apr_09az-.~"), "apr_09az-.~");
    }

    #[test]
    fn a_missing_or_blank_token_is_refused() {
        assert!(matches!(Client::new("http://x", None), Err(CliError::NoToken)));
        assert!(matches!(Client::new("http://x", Some(" ".into())), Err(CliError::NoToken)));
    }
}
