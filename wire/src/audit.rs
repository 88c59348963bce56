//! Audit records: one per request, written by the filter, chained by the service.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::credentials::CredentialUse;

/// What became of a request, as its audit record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A rule (or the default) allowed it and it went upstream.
    Allow,
    /// A human approved it and it went upstream.
    Approved,
    /// Dry run: a rule would have refused it, and it went upstream anyway.
    DryRunAllow,
    /// The filter answered it itself, with this code.
    Refused(Code),
    /// The stream ended before anything was decided (the client went away).
    Incomplete,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Approved => "approved",
            Decision::DryRunAllow => "dry_run_allow",
            Decision::Refused(code) => code.as_str(),
            Decision::Incomplete => "incomplete",
        }
    }

    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "allow" => Some(Decision::Allow),
            "approved" => Some(Decision::Approved),
            "dry_run_allow" => Some(Decision::DryRunAllow),
            "incomplete" => Some(Decision::Incomplete),
            other => Code::parse(other).map(Decision::Refused),
        }
    }

    /// A policy blocked the request: what the "request denied" alert is about.
    /// Approval outcomes have alerts of their own; outages and bad requests are not denials.
    pub fn is_denial(self) -> bool {
        matches!(self, Decision::Refused(Code::DeniedByRule | Code::DeniedByDefault))
    }
}

impl Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Decision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        Decision::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown decision `{s}`")))
    }
}

/// One request as the service stores it. Bodies and path are already masked.
///
/// Field order is the service's canonical order for the hash chain: serde writes struct
/// fields in declaration order, so reordering fields here breaks every stored chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord<'a> {
    /// Unique per record; a retried batch repeats it and is not stored twice.
    pub id: Cow<'a, str>,
    pub time_ms: u64,
    pub subject: Cow<'a, str>,
    #[serde(default)]
    pub groups: Cow<'a, [String]>,
    #[serde(default)]
    pub session_id: Cow<'a, str>,
    pub method: Cow<'a, str>,
    pub path: Cow<'a, str>,
    #[serde(default)]
    pub request_body: Option<Cow<'a, str>>,
    pub status: u32,
    #[serde(default)]
    pub response_body: Option<Cow<'a, str>>,
    pub decision: Decision,
    #[serde(default)]
    pub rule: Option<Cow<'a, str>>,
    #[serde(default)]
    pub approval_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub reason: Option<Cow<'a, str>>,
    /// The credential the upstream got. Left out when there was none, so the records
    /// written before it existed keep their canonical form (and their chain hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialUse<'a>>,
}

/// `POST /v1/audit/batch`. The filter writes this shape by joining serialised records
/// (`{"records":[r1,r2]}`) so that a record is serialised once, when it is queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditBatch<'a> {
    pub records: Vec<AuditRecord<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policy_refusals_are_denials() {
        assert!(Decision::Refused(Code::DeniedByRule).is_denial());
        assert!(Decision::Refused(Code::DeniedByDefault).is_denial());
        for d in [Decision::Allow, Decision::Approved, Decision::DryRunAllow, Decision::Incomplete] {
            assert!(!d.is_denial());
        }
        assert!(!Decision::Refused(Code::DependencyUnavailable).is_denial());
    }

    #[test]
    fn every_decision_reads_back_as_itself() {
        let all = [Decision::Allow, Decision::Approved, Decision::DryRunAllow, Decision::Incomplete]
            .into_iter()
            .chain(Code::ALL.map(Decision::Refused));
        for d in all {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
            assert_eq!(serde_json::from_value::<Decision>(serde_json::to_value(d).unwrap()).unwrap(), d);
        }
        assert!(
            serde_json::from_str::<Decision>("\"deny\"").is_err(),
            "the name the service once listened for is not a decision"
        );
    }

    #[test]
    fn a_record_keeps_its_field_order_on_the_wire() {
        let record = AuditRecord {
            id: "vm-1".into(),
            time_ms: 1,
            subject: "alice".into(),
            groups: Cow::Owned(vec!["support".into()]),
            session_id: "s".into(),
            method: "GET".into(),
            path: "/x".into(),
            request_body: None,
            status: 403,
            response_body: None,
            decision: Decision::Refused(Code::DeniedByRule),
            rule: Some("r".into()),
            approval_id: None,
            latency_ms: 2,
            reason: None,
            credential: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"id":"vm-1","time_ms":1,"subject":"alice","groups":["support"],"session_id":"s","method":"GET","#,
                concat!(
                    r#""path":"/x","request_body":null,"status":403,"response_body":null,"decision":"denied_by_rule","#,
                    r#""rule":"r","approval_id":null,"latency_ms":2,"reason":null}"#
                )
            )
        );
        let batch: AuditBatch<'static> = serde_json::from_str(&format!("{{\"records\":[{json}]}}")).unwrap();
        assert_eq!(batch.records, vec![record]);
    }

    #[test]
    fn a_record_names_the_credential_used_after_every_older_field() {
        let record = AuditRecord {
            credential: Some(CredentialUse { kind: "signed_request".into(), key_id: Some("k-2026".into()) }),
            ..serde_json::from_str(
                r#"{"id":"r","time_ms":1,"subject":"a","method":"GET","path":"/","status":200,
                "decision":"allow"}"#,
            )
            .unwrap()
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.ends_with(r#""reason":null,"credential":{"kind":"signed_request","key_id":"k-2026"}}"#), "{json}");
    }
}
