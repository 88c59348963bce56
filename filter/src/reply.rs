//! The one JSON shape of every answer the filter itself produces.
//!
//! An agent loop reads `error.code` (stable, machine-readable) and `error.retry` (what to
//! do next) and must never have to parse the human `message`. Only fixed texts and rule
//! names go in here: never request contents, token contents or credentials.

use serde::Serialize;

use crate::approval::APPROVAL_ID_HEADER;
use crate::mcp::Awaited;

/// The codes and retry hints are part of the contract with the control service too
/// (an audit record's decision is the code of the answer): defined once, in the wire crate.
pub use airlock_wire::{Code, Retry};

/// A pending or decided approval, as shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRef {
    pub id: String,
    pub url: String,
    /// `pending`, `denied`, `expired` or `rejected` (the approval does not cover this
    /// request, or was used already).
    pub status: &'static str,
}

/// A reply about to be sent. Built only on refusal paths, so allocation here is fine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: Code,
    pub message: String,
    /// A finer machine-readable reason, e.g. `token_expired` under `unauthenticated`.
    pub reason: Option<&'static str>,
    pub rule: Option<String>,
    /// Boxed: most replies carry none, and a small `Reply` is cheap to return in a `Result`.
    pub approval: Option<Box<ApprovalRef>>,
    /// Seconds the client should wait (`retry-after`), where the filter knows them.
    pub retry_after_secs: Option<u64>,
    /// The control service's id of the tool-definition change that blocks this call.
    pub tool_change: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

/// What an agent acts on, the same in both answers: the plain answer's `error`, and the
/// `data` of a JSON-RPC error.
#[derive(Serialize)]
struct Body<'a> {
    code: &'static str,
    status: u32,
    message: &'a str,
    retry: Retry,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a ApprovalRef>,
    /// In the plain answer only where the filter computed it (a rate limit's window); the
    /// `retry-after` header always says it. A JSON-RPC client sees no headers, so its
    /// `data` always carries it when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u64>,
    /// `airlock tools accept` takes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_change: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

/// One JSON-RPC 2.0 error response.
#[derive(Serialize)]
struct RpcError<'a> {
    jsonrpc: &'static str,
    id: &'a serde_json::Value,
    error: RpcErrorBody<'a>,
}

#[derive(Serialize)]
struct RpcErrorBody<'a> {
    code: i32,
    message: &'a str,
    data: &'a Body<'a>,
}

impl Reply {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Reply {
            code,
            message: message.into(),
            reason: None,
            rule: None,
            approval: None,
            retry_after_secs: None,
            tool_change: None,
        }
    }

    pub fn with_tool_change(mut self, id: Option<String>) -> Self {
        self.tool_change = id;
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn with_approval(mut self, approval: ApprovalRef) -> Self {
        self.approval = Some(Box::new(approval));
        self
    }

    pub fn with_rule(mut self, rule: &str) -> Self {
        self.rule = Some(rule.to_string());
        self
    }

    pub fn status(&self) -> u32 {
        self.code.status()
    }

    fn body<'a>(&'a self, request_id: Option<&'a str>) -> Body<'a> {
        Body {
            code: self.code.as_str(),
            status: self.status(),
            message: &self.message,
            retry: self.code.retry(),
            reason: self.reason,
            rule: self.rule.as_deref(),
            approval: self.approval.as_deref(),
            retry_after_seconds: self.retry_after_secs,
            tool_change: self.tool_change.as_deref(),
            request_id,
        }
    }

    /// The JSON body. `request_id` is Envoy's `x-request-id`, so a user can quote it to
    /// an operator who then finds the matching log line and audit record.
    pub fn to_json(&self, request_id: Option<&str>) -> Vec<u8> {
        let envelope = Envelope { error: self.body(request_id) };
        // Serialising plain strings and numbers cannot fail; keep a valid JSON fallback anyway.
        serde_json::to_vec(&envelope)
            .unwrap_or_else(|_| br#"{"error":{"code":"airlock_misconfigured","retry":"never"}}"#.to_vec())
    }

    /// The answer to a JSON-RPC request body (see `mcp::awaited`), as status and body: an
    /// error response per request, with its id (an array for a batch), at the code's
    /// JSON-RPC status. Notifications and responses get no answer: when nothing waits for
    /// one, the body is empty and the status is the plain one, but never 202 (which tells
    /// an MCP client its message was accepted).
    pub fn to_jsonrpc(&self, awaited: &Awaited, request_id: Option<&str>) -> (u32, Vec<u8>) {
        let Some(first) = awaited.ids.first() else {
            let status = if self.code == Code::ApprovalPending { 403 } else { self.status() };
            return (status, Vec::new());
        };
        let mut data = self.body(request_id);
        data.retry_after_seconds = self.retry_after_s();
        let error = |id| RpcError {
            jsonrpc: "2.0",
            id,
            error: RpcErrorBody { code: self.code.jsonrpc_code(), message: &self.message, data: &data },
        };
        let body = if awaited.batch {
            serde_json::to_vec(&awaited.ids.iter().map(error).collect::<Vec<_>>())
        } else {
            serde_json::to_vec(&error(first))
        };
        (self.code.jsonrpc_status(), body.unwrap_or_default())
    }

    /// How long to wait before retrying, when the code says to retry later.
    fn retry_after_s(&self) -> Option<u64> {
        self.retry_after_secs
            .or_else(|| matches!(self.code, Code::DependencyUnavailable | Code::AuditUnavailable).then_some(1))
    }

    /// Headers sent with the reply besides `content-type`.
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("x-airlock-code", self.code.as_str().to_string())];
        if self.code == Code::Unauthenticated {
            headers.push(("www-authenticate", "Bearer error=\"invalid_token\"".to_string()));
        }
        if let Some(a) = &self.approval {
            headers.push((APPROVAL_ID_HEADER, a.id.clone()));
        }
        if let Some(seconds) = self.retry_after_s() {
            headers.push(("retry-after", seconds.to_string()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(reply: &Reply, request_id: Option<&str>) -> serde_json::Value {
        serde_json::from_slice(&reply.to_json(request_id)).unwrap()
    }

    #[test]
    fn denial_names_rule_code_and_never_retry() {
        let v = parse(&Reply::new(Code::DeniedByRule, "blocked").with_rule("no-ddl"), Some("r1"));
        assert_eq!(v["error"]["code"], "denied_by_rule");
        assert_eq!(v["error"]["status"], 403);
        assert_eq!(v["error"]["retry"], "never");
        assert_eq!(v["error"]["rule"], "no-ddl");
        assert_eq!(v["error"]["request_id"], "r1");
    }

    #[test]
    fn agent_can_tell_pending_from_blocked_from_transient() {
        assert_eq!(Code::ApprovalPending.retry(), Retry::AfterApproval);
        assert_eq!(Code::ApprovalPending.status(), 202);
        assert_eq!(Code::DeniedByRule.retry(), Retry::Never);
        assert_eq!(Code::DependencyUnavailable.retry(), Retry::Later);
        assert_eq!(Code::Misconfigured.retry(), Retry::Never);
        assert_eq!(Code::Unauthenticated.retry(), Retry::Reauthenticate);
    }

    #[test]
    fn optional_fields_are_omitted_not_null() {
        let v = parse(&Reply::new(Code::RequestBodyTooLarge, "too big"), None);
        let obj = v["error"].as_object().unwrap();
        assert!(!obj.contains_key("rule"));
        assert!(!obj.contains_key("approval"));
        assert!(!obj.contains_key("request_id"));
        assert_eq!(v["error"]["status"], 413);
    }

    #[test]
    fn rate_limited_reply_says_when_to_retry_in_header_and_body() {
        let r = Reply::new(Code::RateLimited, "slow down").with_rule("reads").with_retry_after(42);
        let v = parse(&r, None);
        assert_eq!(v["error"]["status"], 429);
        assert_eq!(v["error"]["retry"], "later");
        assert_eq!(v["error"]["retry_after_seconds"], 42);
        assert!(r.extra_headers().contains(&("retry-after", "42".to_string())));
        assert!(!parse(&Reply::new(Code::DeniedByRule, "no"), None)["error"]
            .as_object()
            .unwrap()
            .contains_key("retry_after_seconds"));
    }

    #[test]
    fn unauthenticated_reply_carries_reason_and_www_authenticate() {
        let r = Reply::new(Code::Unauthenticated, "expired").with_reason("token_expired");
        assert_eq!(parse(&r, None)["error"]["reason"], "token_expired");
        assert!(r.extra_headers().iter().any(|(n, _)| *n == "www-authenticate"));
    }
}
