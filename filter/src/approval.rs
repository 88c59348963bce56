//! Just-in-time approval: what an `approve` rule asks of the control service, and how a
//! request is bound to the approval that lets it through.
//!
//! An approval is bound to a digest of the exact request (method, raw path and query,
//! body, and the caller's subject), so an approved `SELECT` cannot be swapped for a
//! `DROP` on retry, nor used by another caller.

use serde::Deserialize;

use crate::config_error::ConfigError;

/// Header a client sends to redeem an approved ticket.
pub const APPROVAL_ID_HEADER: &str = "x-airlock-approval-id";
/// Header in which a caller may say why it needs an approval.
pub const REASON_HEADER: &str = "x-airlock-reason";

/// How long an approval may stay pending, unless a rule says otherwise.
const DEFAULT_TTL_SECONDS: u64 = 300;
/// A held request waits at most this long; the shipped Envoy timeouts (330 s) allow it.
pub const MAX_HOLD_SECONDS: u64 = 300;
const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// How a held request meets its approval; the service reads the same type.
pub use airlock_wire::Mode;

/// What to do when the control service cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproversSpec {
    groups: Vec<String>,
    #[serde(default = "one")]
    required: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    mode: Mode,
    approvers: ApproversSpec,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    on_unavailable: OnUnavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSettings {
    pub mode: Mode,
    pub approver_groups: Vec<String>,
    pub required: u32,
    pub ttl_seconds: u64,
    pub on_unavailable: OnUnavailable,
}

pub fn compile(spec: ApprovalSpec, field: &str) -> Result<ApprovalSettings, ConfigError> {
    let groups = spec.approvers.groups;
    if groups.is_empty() || groups.iter().any(|g| g.trim().is_empty()) {
        return Err(ConfigError::new(
            format!("{field}.approvers.groups"),
            "name at least one approver group, none empty",
        ));
    }
    if spec.approvers.required == 0 {
        return Err(ConfigError::new(format!("{field}.approvers.required"), "must be at least 1"));
    }
    let ttl = spec.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    let max = if spec.mode == Mode::Hold { MAX_HOLD_SECONDS } else { MAX_TTL_SECONDS };
    if ttl == 0 || ttl > max {
        return Err(ConfigError::new(
            format!("{field}.ttl_seconds"),
            format!(
                "must be between 1 and {max} for {} mode (Envoy's route timeouts bound a hold)",
                spec.mode.as_str()
            ),
        ));
    }
    Ok(ApprovalSettings {
        mode: spec.mode,
        approver_groups: groups,
        required: spec.approvers.required,
        ttl_seconds: ttl,
        on_unavailable: spec.on_unavailable,
    })
}

/// SHA-256 over length-prefixed fields, so no two different requests share a digest
/// by moving bytes from one field to the next.
pub fn request_digest(method: &str, raw_path: &str, body: &[u8], subject: &str) -> String {
    let mut h = hmac_sha256::Hash::new();
    for part in [method.as_bytes(), raw_path.as_bytes(), body, subject.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 15] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}

/// Approval ids are echoed into paths of calls to the service: accept only the
/// service's own alphabet so a client cannot steer those calls.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ApprovalSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn digest_changes_with_every_field_and_cannot_be_shifted_between_them() {
        let base = request_digest("POST", "/sql", b"select 1", "alice");
        assert_eq!(base.len(), 64);
        assert_ne!(base, request_digest("POST", "/sql", b"select 2", "alice"));
        assert_ne!(base, request_digest("POST", "/sql", b"select 1", "bob"));
        assert_ne!(base, request_digest("PUT", "/sql", b"select 1", "alice"));
        assert_ne!(request_digest("POST", "/sq", b"lselect 1", "alice"), base);
    }

    #[test]
    fn hold_ttl_is_bounded_by_the_envoy_timeouts() {
        let err = compile(
            spec(serde_json::json!({"mode": "hold", "approvers": {"groups": ["dba"]}, "ttl_seconds": 3600})),
            "rules[0].approval",
        )
        .unwrap_err();
        assert_eq!(err.field, "rules[0].approval.ttl_seconds");
        assert!(compile(
            spec(serde_json::json!({"mode": "ticket", "approvers": {"groups": ["dba"]}, "ttl_seconds": 3600})),
            "x"
        )
        .is_ok());
    }

    #[test]
    fn approvers_need_a_group_and_a_positive_quorum() {
        let err = compile(spec(serde_json::json!({"mode": "hold", "approvers": {"groups": []}})), "a").unwrap_err();
        assert_eq!(err.field, "a.approvers.groups");
        let err =
            compile(spec(serde_json::json!({"mode": "hold", "approvers": {"groups": ["dba"], "required": 0}})), "a")
                .unwrap_err();
        assert_eq!(err.field, "a.approvers.required");
    }

    #[test]
    fn approval_ids_outside_the_service_alphabet_are_refused() {
        assert!(valid_id("apr_01HX-abc"));
        assert!(!valid_id("../v1/audit/batch"));
        assert!(!valid_id("a?b"));
        assert!(!valid_id(""));
    }
}
