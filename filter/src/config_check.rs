//! Offline check of a plugin config: validate it exactly as the filter does at load, and
//! say what the policy would decide for a sample request. Used by `airlock check-config`,
//! so operators can try a rule change before Envoy ever sees it.

use std::fmt::Write as _;

use crate::config::Config;
use crate::config_error::ConfigError;
use crate::headers::HeaderList;
use crate::identity::Identity;
use crate::normalize;
use crate::policy::{Action, Body, Evaluation, RequestFacts};

/// A request as the policy sees it once the token has been verified.
#[derive(Debug, Clone, Default)]
pub struct SampleRequest {
    pub method: String,
    /// Raw `:path`, query included.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub subject: String,
    pub groups: Vec<String>,
    pub body: Option<String>,
}

/// Secrets given by environment variable are not resolved offline: any name reads as a
/// placeholder long enough for every length check.
fn placeholder_env(_: &str) -> Option<String> {
    Some("offline-check-placeholder-secret".into())
}

/// Validates `config_json`; on success describes the config and, if given, the decision
/// for `sample`.
pub fn check(config_json: &[u8], sample: Option<&SampleRequest>) -> Result<String, ConfigError> {
    let config = Config::from_json(config_json, &placeholder_env)?;
    let mut out = String::new();
    let rules = config.policy.rules();
    let _ = writeln!(
        out,
        "config OK: {} rules, {} mask profiles, default action {}, control service {}, audit {}",
        rules.len(),
        config.mask_profiles.len(),
        config.policy.default_action().as_str(),
        if config.control.is_some() { "configured" } else { "not configured" },
        if config.audit.is_some() { "on" } else { "off" },
    );
    let Some(sample) = sample else { return Ok(out) };
    let target =
        normalize::normalize_target(&sample.path).map_err(|e| ConfigError::new("sample.path", e.to_string()))?;
    let identity = Identity::new(sample.subject.clone(), sample.groups.clone(), u64::MAX);
    let names: Vec<String> = sample.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    let headers: HeaderList = names.iter().zip(&sample.headers).map(|(n, (_, v))| (n.as_str(), v.as_str())).collect();
    let facts = RequestFacts { method: &sample.method, target: &target, headers: &headers, identity: Some(&identity) };
    let bytes = sample.body.as_deref().unwrap_or_default();
    let parsed = serde_json::from_str::<serde_json::Value>(bytes);
    let body = match (&parsed, bytes.is_empty()) {
        (_, true) => Body::Empty,
        (Ok(json), false) => Body::Json(json),
        (Err(_), false) => Body::NotJson(bytes),
    };
    let _ = writeln!(
        out,
        "request: {} {} (normalised path {}) as {} in [{}]",
        sample.method,
        sample.path,
        target.path,
        sample.subject,
        sample.groups.join(", ")
    );
    match config.policy.evaluate(&facts, body) {
        Evaluation::NeedBody => {
            let _ = writeln!(out, "decision: needs the request body (give one with --body)");
        }
        Evaluation::Decided(d) => {
            if let Some(shadow) = d.dry_run {
                let _ =
                    writeln!(out, "dry-run rule `{}` would have answered {}", shadow.name(), shadow.action().as_str());
            }
            let rule = d.rule.map_or("(default action)".to_string(), |r| format!("rule `{}`", r.name()));
            let _ = write!(out, "decision: {} by {rule}", d.action.as_str());
            if let Some(a) = d.rule.and_then(|r| r.approval()) {
                let _ = write!(
                    out,
                    "; approval in {} mode by {} of [{}]",
                    a.mode.as_str(),
                    a.required,
                    a.approver_groups.join(", ")
                );
            }
            if let Some(p) = d.rule.and_then(|r| r.mask_profile()).and_then(|i| config.mask_profiles.get(i)) {
                let _ = write!(out, "; responses masked with profile `{}`", p.0);
            }
            if config.dry_run {
                let _ = write!(out, " (global dry_run: not enforced)");
            }
            out.push('\n');
            // What the deciding rule's SQL conditions read, so a surprising decision can
            // be traced to the statement, effect or table behind it.
            for reading in d.rule.map(|r| r.sql_readings(body)).unwrap_or_default() {
                let _ = writeln!(out, "  {reading}");
            }
            if let Some(sql_result) = d.rule.and_then(|r| r.sql_result()) {
                let _ = match sql_result.read(body, &crate::policy::Memo::default().sql) {
                    Err(e) => writeln!(out, "  sql_result: refused (403 denied_by_rule): {e}"),
                    Ok(uses) => {
                        let _ = writeln!(out, "  sql_result: masked by column [{}]", uses.returned.join(", "));
                        match (uses.unmaskable(), d.action) {
                            (Some(u), Action::Approve) => writeln!(out, "  sql_result: answered once approved: {u}"),
                            (Some(u), _) => writeln!(out, "  sql_result: refused (403 denied_by_rule): {u}"),
                            (None, _) => Ok(()),
                        }
                    }
                };
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Vec<u8> {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/plugin-config.json")).unwrap()
    }

    fn sample(method: &str, path: &str, groups: &[&str], body: Option<&str>) -> SampleRequest {
        SampleRequest {
            method: method.into(),
            path: path.into(),
            subject: "alice".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            body: body.map(str::to_string),
            ..SampleRequest::default()
        }
    }

    #[test]
    fn shipped_config_blocks_drop_table_offline_as_in_envoy() {
        let out = check(
            &shipped(),
            Some(&sample("POST", "/sql", &["analyst"], Some(r#"{"sql":"DROP/**/TABLE customers"}"#))),
        )
        .unwrap();
        assert!(out.contains("decision: deny by rule `block-destructive-sql`"), "{out}");
    }

    #[test]
    fn offline_check_names_the_approval_and_the_mask_profile() {
        let out = check(
            &shipped(),
            Some(&sample(
                "POST",
                "/sql",
                &["analyst"],
                Some(r#"{"sql":"UPDATE customers SET name='x' WHERE id = 3"}"#),
            )),
        )
        .unwrap();
        assert!(
            out.contains("approve by rule `sql-writes-need-approval`; approval in hold mode by 1 of [dba]"),
            "{out}"
        );
        let out = check(&shipped(), Some(&sample("GET", "/customers/7", &["support"], None))).unwrap();
        assert!(out.contains("allow by rule `support-reads-customers`; responses masked with profile `pii`"), "{out}");
    }

    #[test]
    fn offline_check_explains_the_statement_effect_and_tables_a_sql_rule_matched_on() {
        let out = check(
            &shipped(),
            Some(&sample(
                "POST",
                "/sql",
                &["analyst"],
                Some(r#"{"sql":"WITH x AS (SELECT 1) DELETE FROM customers"}"#),
            )),
        )
        .unwrap();
        assert!(out.contains("decision: deny by rule `sql-no-unbounded-writes`"), "{out}");
        assert!(
            out.contains(
                "sql at /sql (sqlite): statements [select, delete], effects [read, write], tables [customers], \
                 unbounded"
            ),
            "{out}"
        );
    }

    #[test]
    fn offline_check_refuses_an_unknown_sql_dialect() {
        let mut config: serde_json::Value = serde_json::from_slice(&shipped()).unwrap();
        config["sql_dialect"] = serde_json::json!("cobol");
        let err = check(config.to_string().as_bytes(), None).unwrap_err();
        assert_eq!(err.field, "sql_dialect");
        assert!(err.problem.contains("sqlite"), "{err}");
    }

    #[test]
    fn offline_check_reports_the_bad_field() {
        let mut config: serde_json::Value = serde_json::from_slice(&shipped()).unwrap();
        config["rules"][4]["when"]["path"] = serde_json::json!({"regex": "(unclosed"});
        let err = check(config.to_string().as_bytes(), None).unwrap_err();
        assert_eq!(err.field, "rules[4].when.path.regex");
    }
}
