//! The approvals API: what the filter asks (`POST /v1/approvals`, `…/redeem`), what the
//! service answers, and the error codes the filter acts on.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// How a held request meets its approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The request waits, paused in Envoy, until a decision or the deadline.
    Hold,
    /// The client gets a ticket at once and retries with it once approved.
    Ticket,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hold => "hold",
            Mode::Ticket => "ticket",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Hold, Mode::Ticket].into_iter().find(|m| m.as_str() == s)
    }
}

/// Where an approval stands. `Expired` is what a pending approval past its deadline reads
/// as: the service never needs a sweeper to write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalStatus {
    pub const ALL: [ApprovalStatus; 4] =
        [ApprovalStatus::Pending, ApprovalStatus::Approved, ApprovalStatus::Denied, ApprovalStatus::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Who may decide, and how many of them must approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers<'a> {
    pub groups: Cow<'a, [String]>,
    pub required: u32,
}

/// `POST /v1/approvals`: a request held for a human. `body` is already masked; `digest`
/// binds the approval to the exact request (see the filter's `approval::request_digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApproval<'a> {
    pub rule: Cow<'a, str>,
    pub subject: Cow<'a, str>,
    #[serde(default)]
    pub groups: Cow<'a, [String]>,
    pub method: Cow<'a, str>,
    pub path: Cow<'a, str>,
    pub body: Cow<'a, str>,
    pub digest: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub session_id: Cow<'a, str>,
    pub mode: Mode,
    pub ttl_seconds: u64,
    pub approvers: Approvers<'a>,
}

/// `POST /v1/approvals/{id}/redeem`: a ticket presented with the request it must cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemApproval<'a> {
    pub digest: Cow<'a, str>,
    pub subject: Cow<'a, str>,
}

/// The part of the service's approval answers (create, wait) that the filter reads; the
/// service may send more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalState {
    pub id: String,
    pub status: ApprovalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Why the service refused an approval call; the filter turns each into its own answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalErrorCode {
    ApprovalNotFound,
    ApprovalDigestMismatch,
    ApprovalAlreadyUsed,
    ApprovalExpired,
    ApprovalDenied,
    ApprovalNotApproved,
    ApprovalNotPending,
    /// A code this filter does not know (a newer service): treated as a refusal.
    #[serde(other)]
    Other,
}

impl ApprovalErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalErrorCode::ApprovalNotFound => "approval_not_found",
            ApprovalErrorCode::ApprovalDigestMismatch => "approval_digest_mismatch",
            ApprovalErrorCode::ApprovalAlreadyUsed => "approval_already_used",
            ApprovalErrorCode::ApprovalExpired => "approval_expired",
            ApprovalErrorCode::ApprovalDenied => "approval_denied",
            ApprovalErrorCode::ApprovalNotApproved => "approval_not_approved",
            ApprovalErrorCode::ApprovalNotPending => "approval_not_pending",
            ApprovalErrorCode::Other => "other",
        }
    }
}

/// The service's error answer, `{"error": {"code": …}}`; the filter reads only the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorCodeOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCodeOnly {
    pub code: ApprovalErrorCode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_approval_round_trips_from_borrowed_to_owned() {
        let groups = vec!["support".to_string()];
        let sent = CreateApproval {
            rule: "writes".into(),
            subject: "alice".into(),
            groups: Cow::Borrowed(&groups),
            method: "PUT".into(),
            path: "/customers/1".into(),
            body: "{}".into(),
            digest: "ab".into(),
            reason: None,
            session_id: "s1".into(),
            mode: Mode::Hold,
            ttl_seconds: 60,
            approvers: Approvers { groups: Cow::Borrowed(&groups), required: 2 },
        };
        let json = serde_json::to_string(&sent).unwrap();
        assert!(!json.contains("reason"), "an absent reason is left out: {json}");
        let got: CreateApproval<'static> = serde_json::from_str(&json).unwrap();
        assert_eq!(got, sent);
    }

    #[test]
    fn unknown_service_error_codes_read_as_other_not_as_a_parse_failure() {
        let known: ErrorEnvelope =
            serde_json::from_str(r#"{"error":{"code":"approval_denied","message":"x"}}"#).unwrap();
        assert_eq!(known.error.code, ApprovalErrorCode::ApprovalDenied);
        let unknown: ErrorEnvelope = serde_json::from_str(r#"{"error":{"code":"approval_on_fire"}}"#).unwrap();
        assert_eq!(unknown.error.code, ApprovalErrorCode::Other);
    }

    #[test]
    fn every_code_and_status_spells_as_serde_writes_it() {
        for s in ApprovalStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(ApprovalStatus::parse(s.as_str()), Some(s));
        }
        for m in [Mode::Hold, Mode::Ticket] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        let code = ApprovalErrorCode::ApprovalNotPending;
        assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
    }
}
