//! Behaviour of the whole policy: config JSON in, decisions out.

use serde_json::{json, Value};

use super::*;
use crate::normalize::normalize_target;

const PROFILES: &[&str] = &["pii", "secrets"];

/// Approval settings do not change matching; tests of matching leave them out and get
/// a minimal block here.
fn with_approval_blocks(mut rules: Value) -> Value {
    for rule in rules.as_array_mut().unwrap() {
        if rule["action"] == "approve" && rule.get("approval").is_none() {
            rule["approval"] = json!({"mode": "hold", "approvers": {"groups": ["dba"]}});
        }
    }
    rules
}

fn policy(rules: Value, default_action: Action) -> Policy {
    let specs: Vec<RuleSpec> = serde_json::from_value(with_approval_blocks(rules)).unwrap();
    compile(specs, default_action, PROFILES, &SqlDefaults::dialect("generic"), "rules").unwrap()
}

fn config_error(rules: Value) -> ConfigError {
    let specs: Vec<RuleSpec> = serde_json::from_value(with_approval_blocks(rules)).unwrap();
    compile(specs, Action::Deny, PROFILES, &SqlDefaults::dialect("generic"), "rules").unwrap_err()
}

fn identity(subject: &str, groups: &[&str]) -> Identity {
    Identity::new(subject.into(), groups.iter().map(|g| g.to_string()).collect(), 0)
}

/// A request under test; `decide` evaluates it.
struct Req {
    method: &'static str,
    target: RequestTarget,
    headers: HeaderList,
    identity: Option<Identity>,
}

fn req(method: &'static str, raw_path: &str) -> Req {
    Req {
        method,
        target: normalize_target(raw_path).unwrap(),
        headers: HeaderList::default(),
        identity: Some(identity("agent-1", &["agents"])),
    }
}

impl Req {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }

    fn as_(mut self, id: Option<Identity>) -> Self {
        self.identity = id;
        self
    }

    fn eval<'p>(&self, p: &'p Policy, body: Body<'_>) -> Evaluation<'p> {
        let facts = RequestFacts {
            method: self.method,
            target: &self.target,
            headers: &self.headers,
            identity: self.identity.as_ref(),
        };
        p.evaluate(&facts, body)
    }

    /// (deciding rule name or "default", action), panicking on NeedBody.
    fn decide(&self, p: &Policy, body: Body<'_>) -> (String, Action) {
        match self.eval(p, body) {
            Evaluation::Decided(d) => (d.rule.map_or("default".to_owned(), |r| r.name().to_owned()), d.action),
            Evaluation::NeedBody => panic!("unexpected NeedBody"),
        }
    }

    fn with_json(&self, p: &Policy, body_text: &str) -> (String, Action) {
        let value: Value = serde_json::from_str(body_text).unwrap();
        self.decide(p, Body::Json(&value))
    }
}

fn hit(name: &str, action: Action) -> (String, Action) {
    (name.to_owned(), action)
}

fn default(action: Action) -> (String, Action) {
    ("default".to_owned(), action)
}

fn drop_table_rule() -> Value {
    json!([{
        "name": "no-drop",
        "action": "deny",
        "when": {"body": [{
            "json_pointer": "/sql",
            "regex": "\\bdrop\\s+table\\b",
            "normalize": "sql",
            "case_insensitive": true
        }]}
    }])
}

// ---- ordering, defaults, NeedBody ----

#[test]
fn default_action_applies_when_no_rule_matches() {
    let p = policy(json!([{"name": "a", "action": "allow", "when": {"path": {"prefix": "/public/"}}}]), Action::Deny);
    assert_eq!(req("GET", "/private").decide(&p, Body::NotRead), default(Action::Deny));
    let p = policy(json!([]), Action::Allow);
    assert_eq!(req("GET", "/x").decide(&p, Body::NotRead), default(Action::Allow));
}

#[test]
fn first_matching_rule_wins() {
    let p = policy(
        json!([
            {"name": "deny-admin", "action": "deny", "when": {"path": {"prefix": "/admin"}}},
            {"name": "allow-all", "action": "allow"}
        ]),
        Action::Deny,
    );
    assert_eq!(req("GET", "/admin/users").decide(&p, Body::NotRead), hit("deny-admin", Action::Deny));
    assert_eq!(req("GET", "/users").decide(&p, Body::NotRead), hit("allow-all", Action::Allow));
}

#[test]
fn path_rule_sees_through_encoded_traversal() {
    let p = policy(
        json!([{"name": "deny-admin", "action": "deny", "when": {"path": {"prefix": "/admin"}}}]),
        Action::Allow,
    );
    assert_eq!(req("GET", "/public/%252e%252e/admin").decide(&p, Body::NotRead), hit("deny-admin", Action::Deny));
    assert_eq!(req("GET", "/public//..\\admin").decide(&p, Body::NotRead), hit("deny-admin", Action::Deny));
}

#[test]
fn rule_with_matching_request_conditions_and_body_conditions_needs_body() {
    let p = policy(
        json!([
            {"name": "sql", "action": "deny", "when": {"path": {"exact": "/query"}, "body": [{"anywhere": true,
                "contains": "drop"}]}},
            {"name": "allow-all", "action": "allow"}
        ]),
        Action::Deny,
    );
    // The later allow rule would match without the body, but order comes first.
    assert!(matches!(req("POST", "/query").eval(&p, Body::NotRead), Evaluation::NeedBody));
    assert_eq!(req("POST", "/query").with_json(&p, r#"{"q":"DROP it"}"#), hit("allow-all", Action::Allow));
    assert_eq!(req("POST", "/query").with_json(&p, r#"{"q":"drop it"}"#), hit("sql", Action::Deny));
}

#[test]
fn body_rule_whose_request_conditions_fail_does_not_need_body() {
    let p = policy(
        json!([
            {"name": "sql", "action": "deny", "when": {"path": {"exact": "/query"}, "body": [{"raw": true,
                "contains": "drop"}]}},
            {"name": "allow-all", "action": "allow"}
        ]),
        Action::Deny,
    );
    assert_eq!(req("GET", "/health").decide(&p, Body::NotRead), hit("allow-all", Action::Allow));
    assert!(p.may_need_body());
    assert!(p.rules().first().unwrap().needs_body());
    assert!(!p.rules().get(1).unwrap().needs_body());
}

#[test]
fn rule_decided_before_a_body_rule_needs_no_body() {
    let p = policy(
        json!([
            {"name": "health", "action": "allow", "when": {"path": {"exact": "/health"}}},
            {"name": "sql", "action": "deny", "when": {"body": [{"anywhere": true, "contains": "drop"}]}}
        ]),
        Action::Allow,
    );
    assert_eq!(req("GET", "/health").decide(&p, Body::NotRead), hit("health", Action::Allow));
    assert!(matches!(req("GET", "/other").eval(&p, Body::NotRead), Evaluation::NeedBody));
}

#[test]
fn dry_run_rule_is_reported_but_not_enforced() {
    let p = policy(
        json!([
            {"name": "trial-deny", "action": "deny", "dry_run": true, "when": {"path": {"prefix": "/admin"}}},
            {"name": "deny-delete", "action": "deny", "when": {"methods": ["DELETE"]}}
        ]),
        Action::Allow,
    );
    let Evaluation::Decided(d) = req("GET", "/admin").eval(&p, Body::NotRead) else { panic!("NeedBody") };
    assert_eq!(d.action, Action::Allow);
    assert!(d.rule.is_none());
    assert_eq!(d.dry_run.map(Rule::name), Some("trial-deny"));
    // A later enforcing rule still decides.
    let Evaluation::Decided(d) = req("DELETE", "/admin").eval(&p, Body::NotRead) else { panic!("NeedBody") };
    assert_eq!(d.rule.map(Rule::name), Some("deny-delete"));
    assert_eq!(d.dry_run.map(Rule::name), Some("trial-deny"));
}

#[test]
fn rule_accessors_expose_compiled_settings() {
    let p = policy(json!([{"name": "r.1_x-y", "action": "approve", "mask": "secrets"}]), Action::Deny);
    let r = p.rules().first().unwrap();
    assert_eq!((r.name(), r.action(), r.dry_run(), r.mask_profile()), ("r.1_x-y", Action::Approve, false, Some(1)));
    assert_eq!(p.default_action(), Action::Deny);
}

// ---- request-level conditions ----

#[test]
fn methods_compare_upper_case_and_are_alternatives() {
    let p = policy(json!([{"name": "w", "action": "deny", "when": {"methods": ["post", "Delete"]}}]), Action::Allow);
    assert_eq!(req("DELETE", "/").decide(&p, Body::NotRead), hit("w", Action::Deny));
    assert_eq!(req("post", "/").decide(&p, Body::NotRead), hit("w", Action::Deny));
    assert_eq!(req("GET", "/").decide(&p, Body::NotRead), default(Action::Allow));
}

#[test]
fn subjects_match_the_verified_subject() {
    let p = policy(json!([{"name": "ci", "action": "allow", "when": {"subjects": {"prefix": "ci-"}}}]), Action::Deny);
    assert_eq!(
        req("GET", "/").as_(Some(identity("ci-runner", &[]))).decide(&p, Body::NotRead),
        hit("ci", Action::Allow)
    );
    assert_eq!(req("GET", "/").as_(Some(identity("alice", &[]))).decide(&p, Body::NotRead), default(Action::Deny));
}

#[test]
fn identity_conditions_never_hold_for_anonymous_requests() {
    let p = policy(
        json!([
            {"name": "not-bob", "action": "allow", "when": {"subjects": {"exact": "bob", "negate": true}}},
            {"name": "admins", "action": "allow", "when": {"groups": {"any_of": ["admin"]}}}
        ]),
        Action::Deny,
    );
    assert_eq!(req("GET", "/").as_(None).decide(&p, Body::NotRead), default(Action::Deny));
    assert_eq!(
        req("GET", "/").as_(Some(identity("eve", &[]))).decide(&p, Body::NotRead),
        hit("not-bob", Action::Allow)
    );
}

#[test]
fn groups_any_of_needs_one_membership() {
    let p =
        policy(json!([{"name": "g", "action": "allow", "when": {"groups": {"any_of": ["sre", "dba"]}}}]), Action::Deny);
    assert_eq!(req("GET", "/").as_(Some(identity("a", &["dba"]))).decide(&p, Body::NotRead), hit("g", Action::Allow));
    assert_eq!(req("GET", "/").as_(Some(identity("a", &["dev"]))).decide(&p, Body::NotRead), default(Action::Deny));
}

#[test]
fn groups_all_of_needs_every_membership() {
    let p = policy(
        json!([{"name": "g", "action": "allow", "when": {"groups": {"all_of": ["sre", "oncall"]}}}]),
        Action::Deny,
    );
    let both = identity("a", &["oncall", "sre", "dev"]);
    assert_eq!(req("GET", "/").as_(Some(both)).decide(&p, Body::NotRead), hit("g", Action::Allow));
    assert_eq!(req("GET", "/").as_(Some(identity("a", &["sre"]))).decide(&p, Body::NotRead), default(Action::Deny));
}

#[test]
fn header_names_are_case_insensitive_in_config() {
    let p = policy(
        json!([{"name": "h", "action": "deny", "when": {"headers": [{"name": "X-Env", "exact": "prod"}]}}]),
        Action::Allow,
    );
    assert_eq!(req("GET", "/").header("x-env", "prod").decide(&p, Body::NotRead), hit("h", Action::Deny));
    assert_eq!(req("GET", "/").header("x-env", "dev").decide(&p, Body::NotRead), default(Action::Allow));
}

#[test]
fn header_absent_holds_only_without_the_header() {
    let p = policy(
        json!([{"name": "no-ua", "action": "deny", "when": {"headers": [{"name": "User-Agent", "absent": true}]}}]),
        Action::Allow,
    );
    assert_eq!(req("GET", "/").decide(&p, Body::NotRead), hit("no-ua", Action::Deny));
    assert_eq!(req("GET", "/").header("user-agent", "curl").decide(&p, Body::NotRead), default(Action::Allow));
}

#[test]
fn repeated_header_cannot_smuggle_past_an_allow_rule() {
    let allow = policy(
        json!([{"name": "a", "action": "allow", "when": {"headers": [{"name": "x-env", "exact": "dev"}]}}]),
        Action::Deny,
    );
    let r = req("GET", "/").header("x-env", "dev").header("x-env", "prod");
    assert_eq!(r.decide(&allow, Body::NotRead), default(Action::Deny));
    let deny = policy(
        json!([{"name": "d", "action": "deny", "when": {"headers": [{"name": "x-env", "exact": "prod"}]}}]),
        Action::Allow,
    );
    assert_eq!(r.decide(&deny, Body::NotRead), hit("d", Action::Deny));
}

#[test]
fn query_parameter_matches_decoded_value() {
    let p = policy(
        json!([{"name": "force", "action": "approve", "when": {"query": [{"name": "force", "any_of": ["true",
            "1"]}]}}]),
        Action::Allow,
    );
    assert_eq!(req("DELETE", "/ns/x?force=%74rue").decide(&p, Body::NotRead), hit("force", Action::Approve));
    assert_eq!(req("DELETE", "/ns/x?force=false").decide(&p, Body::NotRead), default(Action::Allow));
    assert_eq!(req("DELETE", "/ns/x").decide(&p, Body::NotRead), default(Action::Allow));
}

#[test]
fn query_sql_normalisation_applies_to_values() {
    let p = policy(
        json!([{"name": "q", "action": "deny", "when": {"query": [{"name": "sql", "regex": "drop\\s+table",
            "normalize": "sql"}]}}]),
        Action::Allow,
    );
    assert_eq!(req("GET", "/run?sql=DROP%2F**%2FTABLE+x").decide(&p, Body::NotRead), hit("q", Action::Deny));
}

#[test]
fn negated_path_condition_matches_everything_else() {
    let p = policy(
        json!([{"name": "only-api", "action": "deny", "when": {"path": {"prefix": "/api/", "negate": true}}}]),
        Action::Allow,
    );
    assert_eq!(req("GET", "/metrics").decide(&p, Body::NotRead), hit("only-api", Action::Deny));
    assert_eq!(req("GET", "/api/x").decide(&p, Body::NotRead), default(Action::Allow));
}

#[test]
fn negated_header_holds_for_a_missing_header() {
    let p = policy(
        json!([{"name": "need-ticket", "action": "deny", "when": {"headers": [{"name": "x-ticket", "prefix": "CHG-",
            "negate": true}]}}]),
        Action::Allow,
    );
    assert_eq!(req("GET", "/").decide(&p, Body::NotRead), hit("need-ticket", Action::Deny));
    assert_eq!(req("GET", "/").header("x-ticket", "CHG-1").decide(&p, Body::NotRead), default(Action::Allow));
}

#[test]
fn case_insensitive_path_option() {
    let p = policy(
        json!([{"name": "a", "action": "deny", "when": {"path": {"prefix": "/admin", "case_insensitive": true}}}]),
        Action::Allow,
    );
    assert_eq!(req("GET", "/ADMIN/x").decide(&p, Body::NotRead), hit("a", Action::Deny));
}

// ---- SQL evasions in a JSON body ----

#[test]
fn blocks_drop_table_whatever_the_spelling() {
    let p = policy(drop_table_rule(), Action::Allow);
    for sql in [
        "DROP/**/TABLE users",
        "drop\n\ttable users",
        "DrOp TaBlE users",
        "DROP -- x\nTABLE users",
        "/*!DROP*/ TABLE users",
    ] {
        let body = json!({ "sql": sql });
        assert_eq!(req("POST", "/q").decide(&p, Body::Json(&body)), hit("no-drop", Action::Deny), "{sql:?}");
    }
    let body = json!({"sql": "SELECT * FROM droptable"});
    assert_eq!(req("POST", "/q").decide(&p, Body::Json(&body)), default(Action::Allow));
}

#[test]
fn blocks_drop_table_written_with_json_unicode_escapes() {
    let p = policy(drop_table_rule(), Action::Allow);
    let escaped = r#"{"sql": "\u0044ROP\u0020\u0054ABLE users"}"#;
    assert_eq!(req("POST", "/q").with_json(&p, escaped), hit("no-drop", Action::Deny));
}

#[test]
fn blocks_drop_table_hidden_behind_a_comment_marker_inside_a_string() {
    let p = policy(drop_table_rule(), Action::Allow);
    let body = json!({"sql": "SELECT '--'; DROP TABLE users"});
    assert_eq!(req("POST", "/q").decide(&p, Body::Json(&body)), hit("no-drop", Action::Deny));
}

#[test]
fn allow_rule_with_sql_normalisation_must_hold_for_every_reading() {
    let p = policy(
        json!([{"name": "reads", "action": "allow", "when": {"body": [{"json_pointer": "/sql",
            "regex": "^select [^;]*$", "normalize": "sql"}]}}]),
        Action::Deny,
    );
    let plain = json!({"sql": "SELECT a FROM t -- note"});
    assert_eq!(req("POST", "/q").decide(&p, Body::Json(&plain)), hit("reads", Action::Allow));
    let smuggled = json!({"sql": "SELECT '--'; DELETE FROM t"});
    assert_eq!(req("POST", "/q").decide(&p, Body::Json(&smuggled)), default(Action::Deny));
}

#[test]
fn raw_condition_reads_json_body_with_escapes_decoded() {
    let p = policy(
        json!([{"name": "raw", "action": "deny", "when": {"body": [{"raw": true, "contains": "DROP"}]}}]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/q").with_json(&p, r#"{"x": "\u0044ROP"}"#), hit("raw", Action::Deny));
    assert_eq!(req("POST", "/q").decide(&p, Body::NotJson("please DROP it")), hit("raw", Action::Deny));
    assert_eq!(req("POST", "/q").decide(&p, Body::Empty), default(Action::Allow));
}

// ---- fail-closed bodies ----

#[test]
fn json_condition_on_non_json_body_matches_deny_but_not_allow() {
    let deny = policy(
        json!([{"name": "d", "action": "deny", "when": {"body": [{"json_pointer": "/sql", "contains": "drop"}]}}]),
        Action::Allow,
    );
    let allow = policy(
        json!([{"name": "a", "action": "allow", "when": {"body": [{"json_pointer": "/sql", "contains": "select"}]}}]),
        Action::Deny,
    );
    for body in [Body::NotJson("select 1"), Body::Unreadable] {
        assert_eq!(req("POST", "/q").decide(&deny, body), hit("d", Action::Deny));
        assert_eq!(req("POST", "/q").decide(&allow, body), default(Action::Deny));
    }
}

#[test]
fn approve_rule_also_fails_closed_on_non_json_body() {
    let p = policy(
        json!([{"name": "ap", "action": "approve", "when": {"mcp_tool": {"exact": "delete_repo"}}}]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/mcp").decide(&p, Body::NotJson("{broken")), hit("ap", Action::Approve));
}

#[test]
fn json_condition_on_empty_body_does_not_match() {
    let deny = policy(
        json!([{"name": "d", "action": "deny", "when": {"body": [{"json_pointer": "/x", "exact": "y",
            "negate": true}]}}]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/q").decide(&deny, Body::Empty), default(Action::Allow));
}

#[test]
fn missing_pointer_holds_only_when_negated() {
    let p = policy(
        json!([
            {"name": "must-be-staging", "action": "deny", "when": {"body": [{"json_pointer": "/env",
                "exact": "staging", "negate": true}]}},
            {"name": "prod", "action": "deny", "when": {"body": [{"json_pointer": "/env", "exact": "prod"}]}}
        ]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/").with_json(&p, r#"{"other": 1}"#), hit("must-be-staging", Action::Deny));
    assert_eq!(req("POST", "/").with_json(&p, r#"{"env": "staging"}"#), default(Action::Allow));
}

// ---- pointers, anywhere, wildcards ----

#[test]
fn pointer_matches_numbers_and_booleans_on_their_json_text() {
    let p = policy(
        json!([{"name": "big", "action": "approve", "when": {"body": [{"json_pointer": "/limit",
            "regex": "^[0-9]{4,}$"}, {"json_pointer": "/force", "exact": "true"}]}}]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/").with_json(&p, r#"{"limit": 10000, "force": true}"#), hit("big", Action::Approve));
    assert_eq!(req("POST", "/").with_json(&p, r#"{"limit": 10000, "force": false}"#), default(Action::Allow));
}

#[test]
fn object_at_pointer_matches_if_any_string_inside_matches_for_deny() {
    let p = policy(
        json!([{"name": "d", "action": "deny", "when": {"body": [{"json_pointer": "/params/arguments",
            "contains": "/etc/"}]}}]),
        Action::Allow,
    );
    let body = r#"{"params": {"arguments": {"files": ["a.txt", {"path": "/etc/shadow"}]}}}"#;
    assert_eq!(req("POST", "/").with_json(&p, body), hit("d", Action::Deny));
}

#[test]
fn allow_rule_needs_every_value_under_a_wildcard_to_match() {
    let p = policy(
        json!([{"name": "safe", "action": "allow", "when": {"body": [{"json_pointer": "/files/*",
            "prefix": "/tmp/"}]}}]),
        Action::Deny,
    );
    assert_eq!(req("POST", "/").with_json(&p, r#"{"files": ["/tmp/a", "/tmp/b"]}"#), hit("safe", Action::Allow));
    assert_eq!(req("POST", "/").with_json(&p, r#"{"files": ["/tmp/a", "/etc/passwd"]}"#), default(Action::Deny));
}

#[test]
fn anywhere_sees_nested_values_and_keys() {
    let p = policy(
        json!([{"name": "ssn", "action": "deny", "when": {"body": [{"anywhere": true, "regex": "^ssn$",
            "case_insensitive": true}]}}]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/").with_json(&p, r#"{"a": [{"b": {"SSN": 1}}]}"#), hit("ssn", Action::Deny));
    assert_eq!(req("POST", "/").with_json(&p, r#"{"a": [{"b": "ssn"}]}"#), hit("ssn", Action::Deny));
    assert_eq!(req("POST", "/").with_json(&p, r#"{"a": "ssns"}"#), default(Action::Allow));
}

#[test]
fn negated_anywhere_means_nowhere_for_allow() {
    let p = policy(
        json!([{"name": "clean", "action": "allow", "when": {"body": [{"anywhere": true, "contains": "password",
            "negate": true}]}}]),
        Action::Deny,
    );
    assert_eq!(req("POST", "/").with_json(&p, r#"{"a": "hello"}"#), hit("clean", Action::Allow));
    assert_eq!(req("POST", "/").with_json(&p, r#"{"a": "hello", "b": {"password": "x"}}"#), default(Action::Deny));
}

// ---- MCP and JSON-RPC batches ----

fn tool_call(name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}})
}

#[test]
fn mcp_tool_matches_tools_call_name() {
    let p = policy(
        json!([{"name": "no-shell", "action": "deny", "when": {"mcp_tool": {"any_of": ["run_shell", "exec"]}}}]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&tool_call("exec"))), hit("no-shell", Action::Deny));
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&tool_call("read_file"))), default(Action::Allow));
    let listing = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"name": "exec"}});
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&listing)), default(Action::Allow));
}

#[test]
fn mcp_resource_matches_the_uri_of_resources_read_only() {
    let p = policy(
        json!([{"name": "no-secrets", "action": "deny",
                "when": {"mcp_resource": {"regex": "^file:///etc/|^secret://"}}}]),
        Action::Allow,
    );
    let read = |uri: &str| json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": uri}});
    assert_eq!(
        req("POST", "/mcp").decide(&p, Body::Json(&read("file:///etc/shadow"))),
        hit("no-secrets", Action::Deny)
    );
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&read("secret://db"))), hit("no-secrets", Action::Deny));
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&read("file:///srv/readme"))), default(Action::Allow));
    // The same URI in another method is not a resource read.
    let subscribe = json!({"jsonrpc": "2.0", "id": 3, "method": "resources/subscribe",
                           "params": {"uri": "file:///etc/shadow"}});
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&subscribe)), default(Action::Allow));
    assert!(p.rules().first().unwrap().needs_body());
}

#[test]
fn negated_mcp_tool_matches_other_tool_calls_only() {
    let p = policy(
        json!([{"name": "only-read", "action": "deny", "when": {"mcp_tool": {"exact": "read_file", "negate": true}}}]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&tool_call("write_file"))), hit("only-read", Action::Deny));
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&tool_call("read_file"))), default(Action::Allow));
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}});
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&init)), default(Action::Allow));
}

#[test]
fn deny_rule_catches_a_dangerous_call_anywhere_in_a_batch() {
    let p = policy(
        json!([{"name": "no-shell", "action": "deny", "when": {"mcp_tool": {"exact": "run_shell"}}}]),
        Action::Allow,
    );
    let batch = json!([tool_call("read_file"), tool_call("run_shell")]);
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&batch)), hit("no-shell", Action::Deny));
}

#[test]
fn allow_rule_needs_every_call_of_a_batch_to_match() {
    let p = policy(
        json!([{"name": "reads", "action": "allow", "when": {"mcp_tool": {"any_of": ["read_file", "search"]}}}]),
        Action::Deny,
    );
    let fine = json!([tool_call("read_file"), tool_call("search")]);
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&fine)), hit("reads", Action::Allow));
    let smuggled = json!([tool_call("read_file"), tool_call("delete_repo")]);
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&smuggled)), default(Action::Deny));
}

#[test]
fn batch_pointer_is_relative_to_each_message() {
    let p = policy(drop_table_rule(), Action::Allow);
    let batch = json!([{"sql": "select 1"}, {"sql": "DROP/**/TABLE t"}]);
    assert_eq!(req("POST", "/q").decide(&p, Body::Json(&batch)), hit("no-drop", Action::Deny));
    let allow = policy(
        json!([{"name": "sel", "action": "allow", "when": {"body": [{"json_pointer": "/sql", "prefix": "select"}]}}]),
        Action::Deny,
    );
    assert_eq!(req("POST", "/q").decide(&allow, Body::Json(&batch)), default(Action::Deny));
}

#[test]
fn mcp_tool_arguments_checked_with_pointer() {
    let p = policy(
        json!([{"name": "prod-sql", "action": "approve", "when": {
            "mcp_tool": {"exact": "query"},
            "body": [{"json_pointer": "/params/arguments/sql", "regex": "\\b(delete|update)\\b", "normalize": "sql"}]
        }}]),
        Action::Allow,
    );
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "query",
        "arguments": {"sql": "DELETE/**/FROM users"}}});
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&call)), hit("prod-sql", Action::Approve));
}

// ---- any / not ----

#[test]
fn any_block_lets_one_rule_cover_several_shapes() {
    let p = policy(
        json!([{"name": "no-destructive", "action": "deny", "when": {"methods": ["POST"], "any": [
            {"path": {"prefix": "/admin"}},
            {"mcp_tool": {"exact": "delete_repo"}},
            {"headers": [{"name": "x-force", "exact": "true"}]}
        ]}}]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/admin/x").decide(&p, Body::NotRead), hit("no-destructive", Action::Deny));
    assert_eq!(
        req("POST", "/q").header("x-force", "true").decide(&p, Body::NotRead),
        hit("no-destructive", Action::Deny)
    );
    assert_eq!(
        req("POST", "/mcp").decide(&p, Body::Json(&tool_call("delete_repo"))),
        hit("no-destructive", Action::Deny)
    );
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&tool_call("read_file"))), default(Action::Allow));
    // The rule's own conditions still hold alongside `any`.
    assert_eq!(req("GET", "/admin/x").decide(&p, Body::NotRead), default(Action::Allow));
}

#[test]
fn any_block_settled_by_the_request_needs_no_body() {
    let p = policy(
        json!([{"name": "d", "action": "deny", "when": {"any": [
            {"path": {"prefix": "/admin"}},
            {"body": [{"json_pointer": "/sql", "contains": "drop"}]}
        ]}}]),
        Action::Allow,
    );
    // One alternative holds without the body: decided at the headers.
    assert_eq!(req("POST", "/admin").decide(&p, Body::NotRead), hit("d", Action::Deny));
    // Only the body can tell.
    assert!(matches!(req("POST", "/q").eval(&p, Body::NotRead), Evaluation::NeedBody));
    assert!(p.rules().first().unwrap().needs_body());
    assert_eq!(req("POST", "/q").with_json(&p, r#"{"sql": "drop x"}"#), hit("d", Action::Deny));
    assert_eq!(req("POST", "/q").with_json(&p, r#"{"sql": "select"}"#), default(Action::Allow));
}

#[test]
fn not_block_holds_when_its_conditions_do_not() {
    let p = policy(
        json!([
            {"name": "only-reads-outside-public", "action": "deny", "when": {
                "methods": ["POST", "PUT", "DELETE"], "not": {"path": {"prefix": "/public/"}}}},
            {"name": "rest", "action": "allow"}
        ]),
        Action::Deny,
    );
    assert_eq!(req("POST", "/private/x").decide(&p, Body::NotRead), hit("only-reads-outside-public", Action::Deny));
    assert_eq!(req("POST", "/public/x").decide(&p, Body::NotRead), hit("rest", Action::Allow));
    assert_eq!(req("GET", "/private/x").decide(&p, Body::NotRead), hit("rest", Action::Allow));
}

#[test]
fn negated_block_on_an_unreadable_body_still_fails_closed() {
    // "Deny unless the body is a read": a body that cannot be judged is not a read.
    let deny = policy(
        json!([{"name": "d", "action": "deny", "when": {"not": {"body": [{"json_pointer": "/op", "exact": "read"}]}}}]),
        Action::Allow,
    );
    // "Allow unless the body asks for delete": an unjudgeable body is not allowed.
    let allow = policy(
        json!([{"name": "a", "action": "allow",
                "when": {"not": {"body": [{"json_pointer": "/op", "exact": "delete"}]}}}]),
        Action::Deny,
    );
    for body in [Body::NotJson("{op: read"), Body::Unreadable] {
        assert_eq!(req("POST", "/q").decide(&deny, body), hit("d", Action::Deny));
        assert_eq!(req("POST", "/q").decide(&allow, body), default(Action::Deny));
    }
    assert_eq!(req("POST", "/q").with_json(&deny, r#"{"op": "read"}"#), default(Action::Allow));
    assert_eq!(req("POST", "/q").with_json(&allow, r#"{"op": "read"}"#), hit("a", Action::Allow));
}

#[test]
fn negated_block_leans_against_the_smuggled_value() {
    // A header sent twice: an allow rule's `not` must hold for neither value being
    // `prod`, a deny rule's `not` for some value not being `staging`.
    let allow = policy(
        json!([{"name": "a", "action": "allow", "when": {"not": {"headers": [{"name": "x-env", "exact": "prod"}]}}}]),
        Action::Deny,
    );
    let two = req("POST", "/q").header("x-env", "staging").header("x-env", "prod");
    assert_eq!(two.decide(&allow, Body::NotRead), default(Action::Deny));
    let deny = policy(
        json!([{"name": "d", "action": "deny", "when": {"not": {"headers": [{"name": "x-env", "exact": "staging"}]}}}]),
        Action::Allow,
    );
    assert_eq!(two.decide(&deny, Body::NotRead), hit("d", Action::Deny));
    let staging = req("POST", "/q").header("x-env", "staging");
    assert_eq!(staging.decide(&deny, Body::NotRead), default(Action::Allow));
}

#[test]
fn config_errors_inside_any_and_not_name_the_nested_field() {
    let e = config_error(json!([{"name": "r", "action": "deny", "when": {"any": [
        {"path": {"prefix": "/a"}}, {"not": {"path": {"regex": "("}}}
    ]}}]));
    assert_eq!(e.field, "rules[0].when.any[1].not.path.regex");
    let e = config_error(json!([{"name": "r", "action": "deny", "when": {"any": []}}]));
    assert_eq!(e.field, "rules[0].when.any");
    let mut deep = json!({"path": {"prefix": "/"}});
    for _ in 0..10 {
        deep = json!({"not": deep});
    }
    let e = config_error(json!([{"name": "r", "action": "deny", "when": deep}]));
    assert!(e.to_string().contains("deeper than"), "{e}");
}

// ---- config errors ----

#[test]
fn config_error_names_the_bad_regex_field() {
    let e = config_error(json!([
        {"name": "ok", "action": "allow"},
        {"name": "bad", "action": "deny", "when": {"path": {"regex": "(["}}}
    ]));
    assert_eq!(e.field, "rules[1].when.path.regex");
}

#[test]
fn config_error_for_duplicate_rule_names() {
    let e = config_error(
        json!([{"name": "a", "action": "allow"}, {"name": "b", "action": "deny"}, {"name": "a", "action": "deny"}]),
    );
    assert_eq!(e.field, "rules[2].name");
    assert!(e.problem.contains("rules[0]"), "{}", e.problem);
}

#[test]
fn config_error_for_bad_rule_name() {
    assert_eq!(config_error(json!([{"name": "Deny Admin", "action": "deny"}])).field, "rules[0].name");
    assert_eq!(config_error(json!([{"name": "", "action": "deny"}])).field, "rules[0].name");
}

#[test]
fn config_error_for_two_matcher_kinds_in_a_header() {
    let e = config_error(
        json!([{"name": "h", "action": "deny", "when": {"headers": [{"name": "a", "exact": "x"}, {"name": "b",
            "prefix": "x", "suffix": "y"}]}}]),
    );
    assert_eq!(e.field, "rules[0].when.headers[1]");
    assert!(e.problem.contains("`prefix` and `suffix`"), "{}", e.problem);
}

#[test]
fn config_error_for_absent_header_with_matcher() {
    let e = config_error(
        json!([{"name": "h", "action": "deny", "when": {"headers": [{"name": "a", "absent": true, "exact": "x"}]}}]),
    );
    assert_eq!(e.field, "rules[0].when.headers[0]");
}

#[test]
fn config_error_for_bad_header_name() {
    let e = config_error(
        json!([{"name": "h", "action": "deny", "when": {"headers": [{"name": "bad name", "exact": "x"}]}}]),
    );
    assert_eq!(e.field, "rules[0].when.headers[0].name");
}

#[test]
fn config_error_for_unknown_mask_profile() {
    let e = config_error(json!([{"name": "m", "action": "allow", "mask": "pci"}]));
    assert_eq!(e.field, "rules[0].mask");
    assert!(e.problem.contains("pii, secrets"), "{}", e.problem);
}

#[test]
fn config_error_for_empty_lists() {
    assert_eq!(
        config_error(json!([{"name": "g", "action": "allow", "when": {"groups": {"any_of": []}}}])).field,
        "rules[0].when.groups.any_of"
    );
    assert_eq!(
        config_error(json!([{"name": "m", "action": "allow", "when": {"methods": []}}])).field,
        "rules[0].when.methods"
    );
    assert_eq!(
        config_error(json!([{"name": "s", "action": "allow", "when": {"subjects": {"any_of": []}}}])).field,
        "rules[0].when.subjects.any_of"
    );
}

#[test]
fn config_error_for_bad_method() {
    assert_eq!(
        config_error(json!([{"name": "m", "action": "allow", "when": {"methods": ["GET", "PO ST"]}}])).field,
        "rules[0].when.methods[1]"
    );
}

#[test]
fn config_error_for_bad_json_pointer() {
    let e = config_error(
        json!([{"name": "b", "action": "deny", "when": {"body": [{"json_pointer": "params/sql", "contains": "x"}]}}]),
    );
    assert_eq!(e.field, "rules[0].when.body[0].json_pointer");
}

#[test]
fn config_error_for_body_condition_with_two_targets_or_none() {
    let e = config_error(json!([{"name": "b", "action": "deny", "when": {"body": [{"json_pointer": "/a", "raw": true,
            "contains": "x"}]}}]));
    assert_eq!(e.field, "rules[0].when.body[0]");
    assert!(e.problem.contains("json_pointer and raw"), "{}", e.problem);
    let e = config_error(json!([{"name": "b", "action": "deny", "when": {"body": [{"contains": "x"}]}}]));
    assert_eq!(e.field, "rules[0].when.body[0]");
}

#[test]
fn config_error_for_bad_mcp_tool_and_query_matchers() {
    let e = config_error(json!([{"name": "t", "action": "deny", "when": {"mcp_tool": {"regex": "a("}}}]));
    assert_eq!(e.field, "rules[0].when.mcp_tool.regex");
    let e = config_error(json!([{"name": "q", "action": "deny", "when": {"query": [{"name": "x"}]}}]));
    assert_eq!(e.field, "rules[0].when.query[0]");
}

#[test]
fn config_error_uses_the_callers_field_prefix() {
    let specs: Vec<RuleSpec> =
        serde_json::from_value(json!([{"name": "x", "action": "deny", "mask": "nope"}])).unwrap();
    let e = compile(specs, Action::Deny, &[], &SqlDefaults::dialect("generic"), "routes[2].rules").unwrap_err();
    assert_eq!(e.field, "routes[2].rules[0].mask");
    assert!(e.problem.contains("no mask profiles"));
}

#[test]
fn config_errors_do_not_leak_into_display_beyond_the_field_and_problem() {
    let e = config_error(json!([{"name": "b", "action": "deny", "when": {"path": {"regex": "("}}}]));
    assert!(e.to_string().starts_with("invalid Airlock plugin config at `rules[0].when.path.regex`"));
}

#[test]
fn approve_rule_without_approval_block_is_a_config_error() {
    let specs: Vec<RuleSpec> = serde_json::from_value(json!([{"name": "a", "action": "approve"}])).unwrap();
    assert_eq!(
        compile(specs, Action::Deny, PROFILES, &SqlDefaults::dialect("generic"), "rules").unwrap_err().field,
        "rules[0].approval"
    );
    let specs: Vec<RuleSpec> = serde_json::from_value(
        json!([{"name": "a", "action": "deny", "approval": {"mode": "hold", "approvers": {"groups": ["x"]}}}]),
    )
    .unwrap();
    assert_eq!(
        compile(specs, Action::Deny, PROFILES, &SqlDefaults::dialect("generic"), "rules").unwrap_err().field,
        "rules[0].approval"
    );
}

#[test]
fn limits_are_refused_where_they_would_never_apply_or_are_out_of_range() {
    let limit = json!({"requests": 5, "per_seconds": 60, "by": "subject"});
    let e = config_error(json!([{"name": "a", "action": "deny", "limit": limit}]));
    assert_eq!(e.field, "rules[0].limit");
    assert!(e.problem.contains("deny"), "{}", e.problem);
    let e = config_error(json!([{"name": "a", "action": "allow", "dry_run": true, "limit": limit}]));
    assert_eq!(e.field, "rules[0].limit");
    let e = config_error(json!([
        {"name": "a", "action": "allow", "limit": limit},
        {"name": "b", "action": "approve", "limit": {"requests": 5, "per_seconds": 0, "by": "group"}}
    ]));
    assert_eq!(e.field, "rules[1].limit.per_seconds");
    let p = policy(json!([{"name": "a", "action": "approve", "limit": limit}]), Action::Deny);
    assert_eq!(p.rules()[0].limit().map(|l| l.requests), Some(5));
}

/// The policy a user writes first with `sql` conditions: DDL blocked, writes to
/// `customers` need approval, unbounded deletes refused, reads allowed.
fn sql_policy() -> Policy {
    policy(
        json!([
            {"name": "no-ddl", "action": "deny",
             "when": {"body": [{"json_pointer": "/sql", "sql": {"effects": ["ddl", "admin"]}}]}},
            {"name": "no-unbounded", "action": "deny",
             "when": {"body": [{"json_pointer": "/sql", "sql": {"unbounded": true}}]}},
            {"name": "customer-writes", "action": "approve",
             "when": {"body": [{"json_pointer": "/sql", "sql": {"effects": ["write"], "tables": ["customers"]}}]}},
            {"name": "reads", "action": "allow",
             "when": {"body": [{"json_pointer": "/sql", "sql": {"effects": ["read"]}}]}}
        ]),
        Action::Deny,
    )
}

fn sql_decision(p: &Policy, sql: &str) -> (String, Action) {
    let body = json!({ "sql": sql });
    req("POST", "/sql").decide(p, Body::Json(&body))
}

#[test]
fn sql_conditions_tell_reads_writes_and_ddl_apart_whatever_the_literals_say() {
    let p = sql_policy();
    assert_eq!(sql_decision(&p, "SELECT * FROM customers WHERE name = 'please drop table later'").0, "reads");
    assert_eq!(sql_decision(&p, "SELECT 'truncate'").0, "reads");
    assert_eq!(sql_decision(&p, "DROP/**/TABLE customers"), ("no-ddl".into(), Action::Deny));
    assert_eq!(sql_decision(&p, "UPDATE customers SET email = NULL"), ("no-unbounded".into(), Action::Deny));
    assert_eq!(sql_decision(&p, "UPDATE customers SET email = NULL WHERE id = 3").0, "customer-writes");
    assert_eq!(sql_decision(&p, "UPDATE orders SET note = 'x' WHERE id = 3"), ("default".into(), Action::Deny));
}

#[test]
fn sql_write_hidden_in_a_cte_or_second_statement_is_not_a_read() {
    let p = sql_policy();
    assert_eq!(
        sql_decision(&p, "WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING *) SELECT * FROM d").0,
        "customer-writes"
    );
    assert_eq!(sql_decision(&p, "SELECT 1; DELETE FROM customers WHERE id = 2").0, "customer-writes");
}

#[test]
fn sql_that_does_not_parse_is_refused_by_deny_rules_and_not_allowed() {
    let p = sql_policy();
    assert_eq!(sql_decision(&p, "DROP TABLE"), ("no-ddl".into(), Action::Deny));
    let lenient = policy(
        json!([
            {"name": "no-ddl", "action": "deny",
             "when": {"body": [{"json_pointer": "/sql", "sql": {"effects": ["ddl"], "on_unparsable": "no_match"}}]}},
            {"name": "reads", "action": "allow",
             "when": {"body": [{"json_pointer": "/sql", "sql": {"effects": ["read"]}}]}}
        ]),
        Action::Approve,
    );
    assert_eq!(sql_decision(&lenient, "SELEC 1"), ("default".into(), Action::Approve));
}

#[test]
fn sql_condition_judges_every_message_of_a_batch_and_every_value_under_a_wildcard() {
    let p = sql_policy();
    let batch = json!([{"sql": "SELECT 1"}, {"sql": "DROP TABLE t"}]);
    assert_eq!(req("POST", "/sql").decide(&p, Body::Json(&batch)).0, "no-ddl");
    let reads_only = policy(
        json!([{"name": "reads", "action": "allow",
                "when": {"body": [{"json_pointer": "/queries/*", "sql": {"effects": ["read"]}}]}}]),
        Action::Deny,
    );
    let mixed = json!({"queries": ["SELECT 1", "DELETE FROM t WHERE id = 1"]});
    assert_eq!(req("POST", "/sql").decide(&reads_only, Body::Json(&mixed)).0, "default");
    let reads = json!({"queries": ["SELECT 1", "SELECT 2"]});
    assert_eq!(req("POST", "/sql").decide(&reads_only, Body::Json(&reads)).0, "reads");
}

#[test]
fn sql_condition_reads_mcp_tool_arguments() {
    let p = policy(
        json!([{"name": "no-writes-via-query-tool", "action": "deny",
                "when": {"mcp_tool": {"exact": "query"},
                         "body": [{"json_pointer": "/params/arguments/sql",
                                   "sql": {"effects": ["write", "ddl", "admin"]}}]}}]),
        Action::Allow,
    );
    let call = |sql: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "query", "arguments": {"sql": sql}}})
    };
    assert_eq!(
        req("POST", "/mcp").decide(&p, Body::Json(&call("DELETE FROM t WHERE id = 1"))).0,
        "no-writes-via-query-tool"
    );
    assert_eq!(req("POST", "/mcp").decide(&p, Body::Json(&call("SELECT 'delete'"))).0, "default");
}

#[test]
fn sql_condition_under_not_keeps_failing_closed() {
    // "deny anything that is not a plain read": unparsable SQL is not a plain read.
    let p = policy(
        json!([{"name": "only-reads", "action": "deny",
                "when": {"not": {"body": [{"json_pointer": "/sql", "sql": {"effects": ["read"]}}]}}}]),
        Action::Allow,
    );
    assert_eq!(sql_decision(&p, "SELECT 1").0, "default");
    assert_eq!(sql_decision(&p, "SELECT 1; DELETE FROM t WHERE id = 1").0, "only-reads");
    assert_eq!(sql_decision(&p, "SELEC 1").0, "only-reads");
    let not_json = req("POST", "/sql").decide(&p, Body::NotJson("DELETE FROM t"));
    assert_eq!(not_json.0, "only-reads");
}

#[test]
fn sql_condition_reads_a_raw_text_body() {
    let p = policy(
        json!([{"name": "no-ddl", "action": "deny", "when": {"body": [{"raw": true, "sql": {"effects": ["ddl"]}}]}}]),
        Action::Allow,
    );
    assert_eq!(req("POST", "/sql").decide(&p, Body::NotJson("TRUNCATE payments")).0, "no-ddl");
    assert_eq!(req("POST", "/sql").decide(&p, Body::NotJson("SELECT 'truncate'")).0, "default");
}

#[test]
fn sql_condition_config_errors_name_the_field() {
    let e = config_error(json!([{"name": "r", "action": "deny",
        "when": {"body": [{"json_pointer": "/sql", "regex": "drop", "sql": {"effects": ["ddl"]}}]}}]));
    assert_eq!(e.field, "rules[0].when.body[0]");
    let e = config_error(json!([{"name": "r", "action": "deny",
        "when": {"body": [{"anywhere": true, "sql": {"effects": ["ddl"]}}]}}]));
    assert_eq!(e.field, "rules[0].when.body[0].sql");
    let e = config_error(json!([{"name": "r", "action": "deny",
        "when": {"any": [{"body": [{"json_pointer": "/sql", "sql": {"statements": ["dropp"]}}]}]}}]));
    assert_eq!(e.field, "rules[0].when.any[0].body[0].sql.statements[0]");
}

#[test]
fn rule_explains_what_its_sql_conditions_read() {
    let p = sql_policy();
    let body = json!({"sql": "DELETE FROM main.customers"});
    let lines: Vec<String> = p.rules()[1].sql_readings(Body::Json(&body)).iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        ["sql at /sql (generic): statements [delete], effects [write], tables [main.customers], unbounded"]
    );
}
