//! Every answer the filter itself gives, by stable code: what an agent reads in
//! `error.code`, and what an audit record's `decision` says for a refused request.

use serde::{Deserialize, Serialize};

/// What a client should do after this answer. Lets an agent tell "blocked, do not retry"
/// from "pending, retry later" from "misconfigured" without knowing every code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A rule's rate limit is reached for this caller: retry after `retry-after` seconds.
    RateLimited,
    /// An MCP tool's definition changed since it was pinned, and `block` mode refuses it
    /// until an approver accepts the new definition.
    ToolDefinitionChanged,
    /// The token endpoint refused to exchange the caller's token for one for the
    /// upstream (`token_exchange`).
    CredentialRefused,
}

impl Code {
    pub const ALL: [Code; 17] = [
        Code::Unauthenticated,
        Code::DeniedByRule,
        Code::DeniedByDefault,
        Code::ApprovalPending,
        Code::ApprovalDenied,
        Code::ApprovalExpired,
        Code::ApprovalRejected,
        Code::AuditUnavailable,
        Code::InvalidRequestTarget,
        Code::RequestBodyTooLarge,
        Code::DependencyUnavailable,
        Code::ResponseTooLarge,
        Code::ResponseNotMaskable,
        Code::Misconfigured,
        Code::RateLimited,
        Code::ToolDefinitionChanged,
        Code::CredentialRefused,
    ];

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
            Code::RateLimited => "rate_limited",
            Code::ToolDefinitionChanged => "tool_definition_changed",
            Code::CredentialRefused => "credential_refused",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn status(self) -> u32 {
        match self {
            Code::Unauthenticated => 401,
            Code::ApprovalPending => 202,
            Code::DeniedByRule | Code::DeniedByDefault | Code::CredentialRefused => 403,
            Code::ApprovalDenied | Code::ApprovalExpired | Code::ApprovalRejected => 403,
            Code::InvalidRequestTarget => 400,
            Code::RequestBodyTooLarge => 413,
            Code::DependencyUnavailable | Code::AuditUnavailable => 503,
            Code::ResponseTooLarge | Code::ResponseNotMaskable => 502,
            Code::Misconfigured => 500,
            Code::RateLimited => 429,
            Code::ToolDefinitionChanged => 409,
        }
    }

    /// The JSON-RPC error code of this answer to an MCP (JSON-RPC) request: stable, one per
    /// code, in the implementation-defined server-error range (-32000 to -32099), in
    /// `Code::ALL` order from -32060. The range starts there to stay clear of the codes MCP
    /// and its SDKs already give a meaning: -32000 (connection closed), -32001 (request
    /// timeout), -32002 (resource not found), -32020 to -32022, -32042 (URL elicitation).
    pub fn jsonrpc_code(self) -> i32 {
        match self {
            Code::Unauthenticated => -32060,
            Code::DeniedByRule => -32061,
            Code::DeniedByDefault => -32062,
            Code::ApprovalPending => -32063,
            Code::ApprovalDenied => -32064,
            Code::ApprovalExpired => -32065,
            Code::ApprovalRejected => -32066,
            Code::AuditUnavailable => -32067,
            Code::InvalidRequestTarget => -32068,
            Code::RequestBodyTooLarge => -32069,
            Code::DependencyUnavailable => -32070,
            Code::ResponseTooLarge => -32071,
            Code::ResponseNotMaskable => -32072,
            Code::Misconfigured => -32073,
            Code::RateLimited => -32074,
            Code::ToolDefinitionChanged => -32075,
            Code::CredentialRefused => -32076,
        }
    }

    /// The HTTP status of a JSON-RPC error answer: 200, the status of a JSON-RPC answer an
    /// MCP client reads as a result or error of its call (any other status is a transport
    /// failure to it, and 202 says no answer follows). Kept only where clients act on the
    /// status itself: 401 starts their OAuth flow (`rate_limited` keeps 429
    /// for the same reason: `retry-after`).
    pub fn jsonrpc_status(self) -> u32 {
        match self {
            Code::Unauthenticated => self.status(),
            Code::DeniedByRule | Code::DeniedByDefault => 200,
            Code::ApprovalPending | Code::ApprovalDenied | Code::ApprovalExpired | Code::ApprovalRejected => 200,
            Code::AuditUnavailable | Code::DependencyUnavailable | Code::Misconfigured => 200,
            Code::InvalidRequestTarget | Code::RequestBodyTooLarge => 200,
            Code::ResponseTooLarge | Code::ResponseNotMaskable => 200,
            Code::ToolDefinitionChanged | Code::CredentialRefused => 200,
            // The window is the client's to wait out: a status (and `retry-after`) it can act on.
            Code::RateLimited => self.status(),
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
            // After the `retry-after` the reply carries, when the window ends.
            Code::RateLimited => Retry::Later,
            // Once an approver accepts the new definition (`airlock tools accept`).
            Code::ToolDefinitionChanged => Retry::AfterApproval,
            // The token endpoint's decision about this caller; the same request gets it again.
            Code::CredentialRefused => Retry::Never,
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Code::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown code `{s}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself_and_no_two_share_a_name() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), code);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
    }

    /// Exhaustive on purpose: a new variant does not compile here until it has a place in
    /// `Code::ALL`, which is what `parse` (and so the service) reads.
    fn position(code: Code) -> usize {
        match code {
            Code::Unauthenticated => 0,
            Code::DeniedByRule => 1,
            Code::DeniedByDefault => 2,
            Code::ApprovalPending => 3,
            Code::ApprovalDenied => 4,
            Code::ApprovalExpired => 5,
            Code::ApprovalRejected => 6,
            Code::AuditUnavailable => 7,
            Code::InvalidRequestTarget => 8,
            Code::RequestBodyTooLarge => 9,
            Code::DependencyUnavailable => 10,
            Code::ResponseTooLarge => 11,
            Code::ResponseNotMaskable => 12,
            Code::Misconfigured => 13,
            Code::RateLimited => 14,
            Code::ToolDefinitionChanged => 15,
            Code::CredentialRefused => 16,
        }
    }

    #[test]
    fn every_variant_is_listed_in_all() {
        for (i, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(position(code), i);
        }
    }

    #[test]
    fn jsonrpc_codes_are_distinct_server_errors_clear_of_the_codes_mcp_defines() {
        let mut codes: Vec<i32> = Code::ALL.iter().map(|c| c.jsonrpc_code()).collect();
        for code in &codes {
            assert!((-32099..=-32000).contains(code), "{code}");
            assert!(![-32000, -32001, -32002, -32020, -32021, -32022, -32042].contains(code), "{code}");
        }
        // In `Code::ALL` order, so the next code added takes the next number.
        assert!(codes.windows(2).all(|w| w[1] == w[0] - 1), "{codes:?}");
        codes.dedup();
        assert_eq!(codes.len(), Code::ALL.len());
    }

    #[test]
    fn jsonrpc_answers_are_200_but_where_clients_act_on_the_status() {
        for code in Code::ALL {
            let expected = match code {
                Code::Unauthenticated => 401,
                Code::RateLimited => 429,
                _ => 200,
            };
            assert_eq!(code.jsonrpc_status(), expected, "{code:?}");
        }
    }

    /// The README's table of answers is checked here, so it cannot drift from the codes:
    /// every code has a row with its status and JSON-RPC code.
    #[test]
    fn the_readme_table_lists_every_code_with_its_status_and_jsonrpc_code() {
        let readme = include_str!("../../README.md");
        let mut seen = Vec::new();
        let table = readme.lines().skip_while(|l| !l.starts_with("| code | status | retry | JSON-RPC |"));
        for row in table.skip(2).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (names, status, jsonrpc) = (cells[1], cells[2], cells[4]);
            let jsonrpc: Vec<&str> = jsonrpc.split(" / ").collect();
            let names: Vec<&str> = names.split(" / ").map(|n| n.trim_matches('`')).collect();
            assert_eq!(names.len(), jsonrpc.len(), "{row}");
            for (name, rpc) in names.into_iter().zip(jsonrpc) {
                let code = Code::parse(name).unwrap_or_else(|| panic!("README names an unknown code: {row}"));
                assert_eq!(status, code.status().to_string(), "{row}");
                assert_eq!(rpc, code.jsonrpc_code().to_string(), "{row}");
                seen.push(code);
            }
        }
        for code in Code::ALL {
            assert_eq!(seen.iter().filter(|c| **c == code).count(), 1, "{code:?} needs one README row");
        }
    }

    #[test]
    fn refusals_are_client_or_server_errors_and_pending_is_accepted() {
        for code in Code::ALL {
            let status = code.status();
            assert!(status == 202 || (400..600).contains(&status), "{code:?} {status}");
        }
        assert_eq!(Code::ApprovalPending.retry(), Retry::AfterApproval);
    }
}
