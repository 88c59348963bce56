//! Parsing and validation of request bodies. JSON errors name the exact field (via
//! serde_path_to_error) and every semantic check names the field it rejects, so the
//! filter's authors see at once which part of their call is wrong.

use std::borrow::Cow;

use airlock_wire::{AuditBatch, CreateApproval, ToolObservations};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;
use crate::store::approvals::{NewApproval, Verdict};

/// Parses a JSON body into `T`, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_string() } else { path };
        ApiError::invalid(field, e.inner().to_string())
    })
}

pub const MAX_BODY_CHARS: usize = 1 << 20;
pub const MAX_TTL_SECONDS: i64 = 7 * 24 * 3600;
const MAX_GROUPS: usize = 256;
const MAX_SHORT: usize = 256;
const MAX_PATH: usize = 8192;
const MAX_REASON: usize = 2000;

fn non_empty(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    bounded(field, v, max)
}

fn bounded(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.chars().count() > max {
        return Err(ApiError::invalid(field, format!("is longer than {max} characters")));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        return Err(ApiError::invalid(field, "contains control characters"));
    }
    Ok(())
}

fn group_list(field: &str, groups: &[String], allow_empty: bool) -> Result<(), ApiError> {
    if !allow_empty && groups.is_empty() {
        return Err(ApiError::invalid(field, "must list at least one group"));
    }
    if groups.len() > MAX_GROUPS {
        return Err(ApiError::invalid(field, format!("has more than {MAX_GROUPS} entries")));
    }
    for (i, g) in groups.iter().enumerate() {
        non_empty(&format!("{field}[{i}]"), g, MAX_SHORT)?;
    }
    Ok(())
}

/// An HTTP method token: uppercase letters only (the filter normalizes case).
pub fn check_method(field: &str, m: &str) -> Result<(), ApiError> {
    if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::invalid(field, "must be an uppercase HTTP method such as GET or POST"));
    }
    Ok(())
}

pub fn check_path(field: &str, p: &str) -> Result<(), ApiError> {
    if !p.starts_with('/') {
        return Err(ApiError::invalid(field, "must start with `/`"));
    }
    bounded(field, p, MAX_PATH)
}

pub fn check_digest(field: &str, d: &str) -> Result<(), ApiError> {
    if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ApiError::invalid(field, "must be a lowercase hex SHA-256 digest (64 characters)"));
    }
    Ok(())
}

/// The most observations one report may carry (a filter sends what one tick gathered).
pub const MAX_TOOL_OBSERVATIONS: usize = 1000;

/// Checks a `POST /v1/mcp/tool-definitions` body.
pub fn check_tool_observations(body: &ToolObservations) -> Result<(), ApiError> {
    if body.observations.len() > MAX_TOOL_OBSERVATIONS {
        return Err(ApiError::invalid("observations", format!("has more than {MAX_TOOL_OBSERVATIONS} entries")));
    }
    for (i, o) in body.observations.iter().enumerate() {
        non_empty(&format!("observations[{i}].upstream"), &o.upstream, MAX_SHORT)?;
        non_empty(&format!("observations[{i}].tool"), &o.tool, MAX_SHORT)?;
        check_digest(&format!("observations[{i}].fingerprint"), &o.fingerprint)?;
        check_digest(&format!("observations[{i}].pin"), &o.pin)?;
    }
    Ok(())
}

/// Checks a `POST /v1/approvals` body and turns it into what the store keeps.
pub fn new_approval(req: CreateApproval<'static>) -> Result<NewApproval, ApiError> {
    non_empty("rule", &req.rule, MAX_SHORT)?;
    non_empty("subject", &req.subject, 1024)?;
    group_list("groups", &req.groups, true)?;
    check_method("method", &req.method)?;
    check_path("path", &req.path)?;
    if req.body.chars().count() > MAX_BODY_CHARS {
        return Err(ApiError::invalid("body", format!("is longer than {MAX_BODY_CHARS} characters")));
    }
    check_digest("digest", &req.digest)?;
    if let Some(r) = &req.reason {
        bounded("reason", r, MAX_REASON)?;
    }
    bounded("session_id", &req.session_id, MAX_SHORT)?;
    let ttl_seconds = i64::try_from(req.ttl_seconds)
        .ok()
        .filter(|t| (1..=MAX_TTL_SECONDS).contains(t))
        .ok_or_else(|| ApiError::invalid("ttl_seconds", format!("must be between 1 and {MAX_TTL_SECONDS}")))?;
    group_list("approvers.groups", &req.approvers.groups, false)?;
    if !(1..=32).contains(&req.approvers.required) {
        return Err(ApiError::invalid("approvers.required", "must be between 1 and 32"));
    }
    Ok(NewApproval {
        rule: req.rule.into_owned(),
        subject: req.subject.into_owned(),
        groups: req.groups.into_owned(),
        method: req.method.into_owned(),
        path: req.path.into_owned(),
        body: req.body.into_owned(),
        digest: req.digest.into_owned(),
        reason: req.reason.map(Cow::into_owned).filter(|r| !r.trim().is_empty()),
        session_id: req.session_id.into_owned(),
        mode: req.mode,
        ttl_seconds,
        approver_groups: req.approvers.groups.into_owned(),
        required: i64::from(req.approvers.required),
    })
}

/// `POST /v1/approvals/{id}/decision` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: String,
    #[serde(default)]
    pub reason: String,
}

impl DecisionRequest {
    pub fn validate(&self) -> Result<Verdict, ApiError> {
        let verdict = match self.decision.as_str() {
            "approve" => Verdict::Approve,
            "deny" => Verdict::Deny,
            _ => return Err(ApiError::invalid("decision", "must be `approve` or `deny`")),
        };
        non_empty("reason", &self.reason, MAX_REASON)?;
        Ok(verdict)
    }
}

pub const MAX_BATCH: usize = 5000;

/// Largest `time_ms` and `latency_ms` stored (the columns are signed 64-bit).
const MAX_MS: u64 = i64::MAX.unsigned_abs();

/// Checks a `POST /v1/audit/batch` body; problems name the record (`records[3].path`).
/// The decision of each record is already known to be one the filter writes: anything
/// else fails to parse, at `records[i].decision`.
pub fn check_audit_batch(batch: &AuditBatch) -> Result<(), ApiError> {
    if batch.records.len() > MAX_BATCH {
        return Err(ApiError::invalid("records", format!("has more than {MAX_BATCH} records; split the batch")));
    }
    for (i, r) in batch.records.iter().enumerate() {
        let f = |name: &str| format!("records[{i}].{name}");
        non_empty(&f("id"), &r.id, MAX_SHORT)?;
        for (name, ms) in [("time_ms", r.time_ms), ("latency_ms", r.latency_ms)] {
            if ms > MAX_MS {
                return Err(ApiError::invalid(f(name), format!("must be at most {MAX_MS}")));
            }
        }
        bounded(&f("subject"), &r.subject, 1024)?;
        group_list(&f("groups"), &r.groups, true)?;
        bounded(&f("session_id"), &r.session_id, MAX_SHORT)?;
        check_method(&f("method"), &r.method)?;
        check_path(&f("path"), &r.path)?;
        if r.status > 999 {
            return Err(ApiError::invalid(f("status"), "must be an HTTP status (0 when no response was sent)"));
        }
        for (name, body) in [("request_body", &r.request_body), ("response_body", &r.response_body)] {
            if body.as_ref().is_some_and(|b| b.chars().count() > MAX_BODY_CHARS) {
                return Err(ApiError::invalid(f(name), format!("is longer than {MAX_BODY_CHARS} characters")));
            }
        }
        for (name, v) in [("rule", &r.rule), ("approval_id", &r.approval_id)] {
            if let Some(v) = v {
                bounded(&f(name), v, MAX_SHORT)?;
            }
        }
        if let Some(v) = &r.reason {
            bounded(&f("reason"), v, MAX_REASON)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_wire::Mode;

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "rule": "prod-writes", "subject": "agent-1", "groups": ["agents"], "method": "POST",
            "path": "/sql", "body": "DROP TABLE users", "digest": "a".repeat(64), "reason": "cleanup",
            "session_id": "s-1", "mode": "hold", "ttl_seconds": 300,
            "approvers": {"groups": ["dba"], "required": 1}
        })
    }

    fn field_of(v: serde_json::Value) -> String {
        let bytes = serde_json::to_vec(&v).unwrap();
        let err = parse_json::<CreateApproval>(&bytes).and_then(new_approval).unwrap_err();
        match err {
            ApiError::InvalidField { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accepts_a_complete_approval_request() {
        let bytes = serde_json::to_vec(&valid()).unwrap();
        let a = new_approval(parse_json(&bytes).unwrap()).unwrap();
        assert_eq!(a.mode, Mode::Hold);
        assert_eq!(a.required, 1);
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("rule", serde_json::json!("")),
            ("method", serde_json::json!("post")),
            ("path", serde_json::json!("sql")),
            ("digest", serde_json::json!("XYZ")),
            ("mode", serde_json::json!("later")),
            ("ttl_seconds", serde_json::json!(0)),
            ("ttl_seconds", serde_json::json!(-5)),
            ("ttl_seconds", serde_json::json!(u64::MAX)),
        ];
        for (name, bad) in cases {
            let mut v = valid();
            v[name] = bad;
            assert_eq!(field_of(v), name);
        }
        let mut v = valid();
        v["approvers"]["required"] = serde_json::json!(0);
        assert_eq!(field_of(v), "approvers.required");
        let mut v = valid();
        v["approvers"]["groups"] = serde_json::json!([]);
        assert_eq!(field_of(v), "approvers.groups");
    }

    #[test]
    fn type_errors_and_unknown_fields_name_the_path() {
        let mut v = valid();
        v["approvers"]["required"] = serde_json::json!("two");
        assert_eq!(field_of(v), "approvers.required");
        let mut v = valid();
        v["extra"] = serde_json::json!(1);
        assert_eq!(field_of(v), "extra");
    }

    #[test]
    fn decision_requires_a_known_verdict_and_a_reason() {
        let d = DecisionRequest { decision: "approve".into(), reason: "ok".into() };
        assert_eq!(d.validate().unwrap(), Verdict::Approve);
        assert!(DecisionRequest { decision: "maybe".into(), reason: "x".into() }.validate().is_err());
        assert!(DecisionRequest { decision: "deny".into(), reason: " ".into() }.validate().is_err());
    }

    #[test]
    fn audit_batch_rejects_bad_record_fields_by_index() {
        let body = br#"{"records":[
            {"id":"a","time_ms":1,"subject":"s","method":"GET","path":"/","status":200,"decision":"allow"},
            {"id":"b","time_ms":1,"subject":"s","method":"GET","path":"nope","status":200,"decision":"allow"}]}"#;
        let batch: AuditBatch = parse_json(body).unwrap();
        match check_audit_batch(&batch).unwrap_err() {
            ApiError::InvalidField { field, .. } => assert_eq!(field, "records[1].path"),
            other => panic!("{other:?}"),
        }
    }

    fn batch_error(records: serde_json::Value) -> (String, String) {
        let body = serde_json::to_vec(&serde_json::json!({ "records": records })).unwrap();
        match parse_json::<AuditBatch>(&body).and_then(|b| check_audit_batch(&b)) {
            Err(ApiError::InvalidField { field, problem }) => (field, problem),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn audit_batch_accepts_only_decisions_the_filter_writes() {
        let record = |id: &str, decision: &str| {
            serde_json::json!({"id": id, "time_ms": 1, "subject": "s", "method": "GET",
                               "path": "/", "status": 403, "decision": decision})
        };
        let good = ["allow", "denied_by_rule", "denied_by_default", "approval_pending"];
        let mut records: Vec<_> = good.iter().map(|d| record(d, d)).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "records": records })).unwrap();
        check_audit_batch(&parse_json(&body).unwrap()).unwrap();
        // What the service once listened for is not a decision: the field is named.
        records.push(record("x", "deny"));
        let (field, problem) = batch_error(serde_json::Value::Array(records));
        assert_eq!(field, "records[4].decision");
        assert!(problem.contains("unknown decision `deny`"), "{problem}");
    }

    #[test]
    fn audit_batch_refuses_times_beyond_the_stored_range() {
        let (field, _) = batch_error(serde_json::json!([{"id": "a", "time_ms": u64::MAX,
            "subject": "s", "method": "GET", "path": "/", "status": 200, "decision": "allow"}]));
        assert_eq!(field, "records[0].time_ms");
        let (field, _) = batch_error(serde_json::json!([{"id": "a", "time_ms": -1,
            "subject": "s", "method": "GET", "path": "/", "status": 200, "decision": "allow"}]));
        assert_eq!(field, "records[0].time_ms");
    }
}
