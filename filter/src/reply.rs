//! The one JSON shape of every answer the filter itself produces.
//!
//! An agent loop reads `error.code` (stable, machine-readable) and `error.retry` (what to
//! do next) and must never have to parse the human `message`. Only fixed texts and rule
//! names go in here: never request contents, token contents or credentials.

use serde::Serialize;

/// What a client should do after this answer. Lets an agent tell "blocked, do not retry"
/// from "pending, retry later" from "misconfigured" without knowing every code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Policy said no: the same request will be refused again.
    Never,
    /// Get a new or valid token, then retry.
    Reauthenticate,
    /// Change the request (smaller body, valid target), then retry.
    FixRequest,
    /// A dependency of Airlock is down or busy: retry with backoff.
    Later,
    /// A human must approve first; retry with the approval id once approved.
    AfterApproval,
}

/// Every answer Airlock produces, by stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthenticated,
    DeniedByRule,
    DeniedByDefault,
    ApprovalPending,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRejected,
    AuditUnavailable,
    InvalidRequestTarget,
    RequestBodyTooLarge,
    DependencyUnavailable,
    ResponseTooLarge,
    ResponseNotMaskable,
    Misconfigured,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthenticated => "unauthenticated",
            Code::DeniedByRule => "denied_by_rule",
            Code::DeniedByDefault => "denied_by_default",
            Code::ApprovalPending => "approval_pending",
            Code::ApprovalDenied => "approval_denied",
            Code::ApprovalExpired => "approval_expired",
            Code::ApprovalRejected => "approval_rejected",
            Code::AuditUnavailable => "audit_unavailable",
            Code::InvalidRequestTarget => "invalid_request_target",
            Code::RequestBodyTooLarge => "request_body_too_large",
            Code::DependencyUnavailable => "dependency_unavailable",
            Code::ResponseTooLarge => "response_too_large",
            Code::ResponseNotMaskable => "response_not_maskable",
            Code::Misconfigured => "airlock_misconfigured",
        }
    }

    pub fn status(self) -> u32 {
        match self {
            Code::Unauthenticated => 401,
            Code::ApprovalPending => 202,
            Code::DeniedByRule | Code::DeniedByDefault => 403,
            Code::ApprovalDenied | Code::ApprovalExpired | Code::ApprovalRejected => 403,
            Code::InvalidRequestTarget => 400,
            Code::RequestBodyTooLarge => 413,
            Code::DependencyUnavailable | Code::AuditUnavailable => 503,
            Code::ResponseTooLarge | Code::ResponseNotMaskable => 502,
            Code::Misconfigured => 500,
        }
    }

    pub fn retry(self) -> Retry {
        match self {
            Code::Unauthenticated => Retry::Reauthenticate,
            Code::DeniedByRule | Code::DeniedByDefault | Code::Misconfigured => Retry::Never,
            Code::ResponseTooLarge | Code::ResponseNotMaskable => Retry::Never,
            Code::ApprovalPending => Retry::AfterApproval,
            Code::ApprovalDenied | Code::ApprovalRejected => Retry::Never,
            // This approval is over; the same request may be submitted for a new one.
            Code::ApprovalExpired => Retry::Never,
            Code::InvalidRequestTarget | Code::RequestBodyTooLarge => Retry::FixRequest,
            Code::DependencyUnavailable | Code::AuditUnavailable => Retry::Later,
        }
    }
}

/// A pending or decided approval, as shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRef {
    pub id: String,
    pub url: String,
    pub status: String,
}

/// A reply about to be sent. Built only on refusal paths, so allocation here is fine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: Code,
    pub message: String,
    /// A finer machine-readable reason, e.g. `token_expired` under `unauthenticated`.
    pub reason: Option<&'static str>,
    pub rule: Option<String>,
    pub approval: Option<ApprovalRef>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

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
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl Reply {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Reply { code, message: message.into(), reason: None, rule: None, approval: None }
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn with_approval(mut self, approval: ApprovalRef) -> Self {
        self.approval = Some(approval);
        self
    }

    pub fn with_rule(mut self, rule: &str) -> Self {
        self.rule = Some(rule.to_string());
        self
    }

    pub fn status(&self) -> u32 {
        self.code.status()
    }

    /// The JSON body. `request_id` is Envoy's `x-request-id`, so a user can quote it to
    /// an operator who then finds the matching log line and audit record.
    pub fn to_json(&self, request_id: Option<&str>) -> Vec<u8> {
        let envelope = Envelope {
            error: Body {
                code: self.code.as_str(),
                status: self.status(),
                message: &self.message,
                retry: self.code.retry(),
                reason: self.reason,
                rule: self.rule.as_deref(),
                approval: self.approval.as_ref(),
                request_id,
            },
        };
        // Serialising plain strings and numbers cannot fail; keep a valid JSON fallback anyway.
        serde_json::to_vec(&envelope).unwrap_or_else(|_| {
            br#"{"error":{"code":"airlock_misconfigured","retry":"never"}}"#.to_vec()
        })
    }

    /// Headers sent with the reply besides `content-type`.
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("x-airlock-code", self.code.as_str().to_string())];
        if self.code == Code::Unauthenticated {
            headers.push(("www-authenticate", "Bearer error=\"invalid_token\"".to_string()));
        }
        if let Some(a) = &self.approval {
            headers.push(("x-airlock-approval-id", a.id.clone()));
        }
        if matches!(self.code, Code::DependencyUnavailable | Code::AuditUnavailable) {
            headers.push(("retry-after", "1".to_string()));
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
    fn unauthenticated_reply_carries_reason_and_www_authenticate() {
        let r = Reply::new(Code::Unauthenticated, "expired").with_reason("token_expired");
        assert_eq!(parse(&r, None)["error"]["reason"], "token_expired");
        assert!(r.extra_headers().iter().any(|(n, _)| *n == "www-authenticate"));
    }
}
