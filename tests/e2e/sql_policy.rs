//! `sql` conditions end to end: real Envoy + airlock.wasm with the shipped rules (DDL and
//! admin denied, unbounded writes denied, writes need approval, reads allowed) in front of
//! the demo upstream's real SQLite, with the real control service for approvals (ticket
//! mode, so a test holds no connection open). Every test checks the table on the upstream
//! itself afterwards.

use airlock_e2e::control::{ControlService, DBA_ALICE, DBA_BOB};
use airlock_e2e::fixtures::{auth_for, builder_for, error_of, test_plugin_config};
use airlock_e2e::{send, Reply, Stack, TestKeys};
use serde_json::{json, Value};

struct Setup {
    stack: Stack,
    control: ControlService,
    /// An analyst agent: the shipped rules let analysts query `/sql`.
    auth: String,
}

fn setup() -> Setup {
    let keys = TestKeys::shared();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("airlock-e2e-sql-{}-{nanos}", std::process::id()));
    let control = ControlService::start(&dir, &[DBA_BOB, DBA_ALICE], "").unwrap();
    let mut config = test_plugin_config();
    for rule in config["rules"].as_array_mut().unwrap() {
        if rule["action"] == "approve" {
            rule["approval"]["mode"] = json!("ticket");
        }
    }
    let stack = builder_for(config, keys).control_port(control.port()).start().unwrap();
    Setup { stack, control, auth: auth_for(keys, "alice", &["analyst"]) }
}

impl Setup {
    fn sql(&self, sql: &str, ticket: Option<&str>) -> Reply {
        let mut headers = vec![("authorization", self.auth.as_str())];
        if let Some(t) = ticket {
            headers.push(("x-airlock-approval-id", t));
        }
        self.stack.post_json("/sql", &headers, &json!({ "sql": sql })).unwrap()
    }

    /// Runs `sql` on the upstream directly, bypassing Envoy: the ground truth.
    fn upstream(&self, sql: &str) -> Value {
        let body = json!({ "sql": sql }).to_string();
        let reply = send(
            self.stack.agent(),
            "POST",
            &self.stack.upstream_url("/sql"),
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json().unwrap()
    }

    fn tables(&self) -> Value {
        self.upstream("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")["rows"].clone()
    }

    fn customers(&self) -> u64 {
        self.upstream("SELECT count(*) FROM customers")["rows"][0][0].as_u64().unwrap()
    }

    fn email_of(&self, id: u64) -> Value {
        self.upstream(&format!("SELECT email FROM customers WHERE id = {id}"))["rows"][0][0].clone()
    }
}

fn assert_denied_by(reply: &Reply, rule: &str, what: &str) {
    assert_eq!(reply.status, 403, "{what}: {}", reply.text());
    let error = error_of(reply);
    assert_eq!(error["code"], "denied_by_rule", "{what}: {error}");
    assert_eq!(error["rule"], rule, "{what}: {error}");
}

#[test]
fn ddl_and_admin_statements_are_denied_and_the_schema_is_unchanged() {
    let s = setup();
    let before = s.tables();
    for sql in [
        "DROP TABLE customers",
        "ALTER TABLE customers RENAME TO gone",
        "CREATE TABLE stolen AS SELECT * FROM customers",
        "SELECT 1; DROP TABLE customers",
        "ATTACH DATABASE '/tmp/airlock-e2e-attached.db' AS x",
        "PRAGMA writable_schema = 1",
        "SELECT load_extension('/tmp/evil.so')",
    ] {
        assert_denied_by(&s.sql(sql, None), "block-destructive-sql", sql);
    }
    assert_eq!(s.tables(), before);
}

#[test]
fn unbounded_writes_are_denied_however_the_where_is_disguised() {
    let s = setup();
    let before = s.customers();
    for sql in [
        "DELETE FROM customers",
        "DELETE FROM customers WHERE 1=1",
        "DELETE FROM customers WHERE 'a' = 'a' OR id = 2",
        "UPDATE customers SET email = NULL",
        "UPDATE customers SET email = NULL WHERE id = id",
        "WITH t AS (SELECT 1) DELETE FROM customers",
    ] {
        assert_denied_by(&s.sql(sql, None), "sql-no-unbounded-writes", sql);
    }
    assert_eq!(s.customers(), before);
    assert!(s.email_of(1).is_string(), "emails are still there");
}

#[test]
fn a_bounded_write_needs_approval_and_runs_once_approved() {
    let s = setup();
    let update = "UPDATE customers SET email = 'moved@example.org' WHERE id = 3";
    let original = s.email_of(3);
    let pending = s.sql(update, None);
    assert_eq!(pending.status, 202, "{}", pending.text());
    let error = error_of(&pending);
    assert_eq!(error["code"], "approval_pending", "{error}");
    assert_eq!(error["rule"], "sql-writes-need-approval", "{error}");
    assert_eq!(s.email_of(3), original, "nothing ran before approval");

    let id = error["approval"]["id"].as_str().unwrap().to_string();
    s.control.decide(&id, &DBA_BOB, "approve", "address change confirmed").unwrap();
    let done = s.sql(update, Some(&id));
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(s.email_of(3), json!("moved@example.org"));
}

#[test]
fn a_write_hidden_in_a_cte_needs_approval_and_does_not_run() {
    let s = setup();
    let before = s.customers();
    let cte = "WITH doomed AS (SELECT id FROM customers WHERE id = 5) \
               DELETE FROM customers WHERE id IN (SELECT id FROM doomed)";
    let reply = s.sql(cte, None);
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(error_of(&reply)["rule"], "sql-writes-need-approval");
    assert_eq!(s.customers(), before);
}

#[test]
fn reads_with_keywords_in_literals_and_functions_named_like_writes_are_allowed() {
    let s = setup();
    let before = s.tables();
    let reads = [
        ("SELECT name FROM customers WHERE name = 'please drop table later'", 0),
        ("SELECT 'truncate' AS word", 1),
        ("SELECT count(*) AS n FROM customers -- then DELETE FROM customers", 1),
        ("SELECT replace(name, 'a', 'b') AS n FROM customers WHERE id = 1", 1),
        ("SELECT /* UPDATE customers SET x = 1 */ id FROM customers WHERE id = 2", 1),
    ];
    for (sql, rows) in reads {
        let reply = s.sql(sql, None);
        assert_eq!(reply.status, 200, "{sql}: {}", reply.text());
        assert_eq!(reply.json().unwrap()["rows"].as_array().unwrap().len(), rows, "{sql}");
    }
    // Nesting just inside the parser's limit parses in the VM without exhausting its stack.
    let deep = format!("SELECT {}1{} AS one", "(".repeat(30), ")".repeat(30));
    let reply = s.sql(&deep, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let word = s.sql("SELECT 'truncate' AS word", None).json().unwrap();
    assert_eq!(word["rows"][0][0], "truncate");
    assert_eq!(s.tables(), before);
}

#[test]
fn sql_that_does_not_parse_is_refused_fail_closed() {
    let s = setup();
    for sql in ["SELEC name FROM customers", "DROP TABLE", &format!("SELECT {}1{}", "(".repeat(200), ")".repeat(200))] {
        let reply = s.sql(sql, None);
        assert_denied_by(&reply, "block-destructive-sql", sql);
        // The agent learns its SQL did not parse, not that it was destructive, and the
        // parser's quote of the text stays out of the answer.
        let message = error_of(&reply)["message"].as_str().unwrap().to_string();
        assert!(message.contains("the SQL at /sql does not parse as sqlite SQL"), "{message}");
        assert!(!message.contains("SELEC") && !message.contains("Expected"), "{message}");
    }
    let parsed = s.sql("DROP TABLE customers", None);
    let message = error_of(&parsed)["message"].as_str().unwrap().to_string();
    assert_eq!(message, "the request was blocked by rule `block-destructive-sql`");
}
