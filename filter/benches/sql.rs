//! Cost of deciding a `/sql` request: the shipped policy's `sql` conditions (a parsed
//! statement) against the regex rules they replaced (`normalize: "sql"` readings), on the
//! same bodies, side by side in one run so the ratio holds on a noisy machine:
//!
//!     cargo bench -p airlock-filter --bench sql
//!
//! Prints µs per policy evaluation (native), the best of many timed batches; then the
//! cost of following sensitive columns through each statement (column masking), as one
//! analysis with and without `sensitive_columns`.

// A bench is test code: a failed unwrap is a bench bug, reported as such.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use airlock_filter::headers::HeaderList;
use airlock_filter::identity::Identity;
use airlock_filter::normalize::normalize_target;
use airlock_filter::policy::{self, Action, Body, Evaluation, Policy, RequestFacts, RuleSpec, SqlDefaults};
use airlock_filter::sql::{self, Dialect, SensitiveColumns, Table};
use serde_json::{json, Value};

/// The four `/sql` rules of the shipped config before `sql` conditions existed.
fn regex_rules() -> Value {
    let body =
        |regex: &str| json!([{"json_pointer": "/sql", "regex": regex, "case_insensitive": true, "normalize": "sql"}]);
    json!([
        {"name": "destructive", "action": "deny", "when": {"path": {"exact": "/sql"},
         "body": body(r"\b(drop|truncate|alter)\s+(table|database|schema)\b|\bdelete\s+from\s+\w+\s*(;|$)")}},
        {"name": "writes", "action": "approve", "when": {"path": {"exact": "/sql"},
         "body": body(r"\b(insert|update|delete|create|replace)\b")},
         "approval": {"mode": "hold", "approvers": {"groups": ["dba"]}}},
        {"name": "reads", "action": "allow", "when": {"path": {"exact": "/sql"}}}
    ])
}

/// The shipped rules now.
fn sql_rules() -> Value {
    let body = |sql: Value| json!([{"json_pointer": "/sql", "sql": sql}]);
    json!([
        {"name": "destructive", "action": "deny", "when": {"path": {"exact": "/sql"},
         "body": body(json!({"effects": ["ddl", "admin"]}))}},
        {"name": "unbounded", "action": "deny", "when": {"path": {"exact": "/sql"},
         "body": body(json!({"unbounded": true}))}},
        {"name": "writes", "action": "approve", "when": {"path": {"exact": "/sql"},
         "body": body(json!({"effects": ["write"]}))},
         "approval": {"mode": "hold", "approvers": {"groups": ["dba"]}}},
        {"name": "reads", "action": "allow", "when": {"path": {"exact": "/sql"}}}
    ])
}

fn compile(rules: Value) -> Policy {
    let specs: Vec<RuleSpec> = serde_json::from_value(rules).unwrap();
    policy::compile(specs, Action::Deny, &[], &SqlDefaults::dialect("sqlite"), "rules").unwrap()
}

fn queries() -> Vec<(&'static str, String)> {
    let ors: Vec<String> = (0..120).map(|i| format!("c.id = {i} OR c.email = 'user{i}@example.com'")).collect();
    vec![
        ("short read (41 B)", "SELECT name, email FROM customers LIMIT 5".into()),
        (
            "join read (240 B)",
            "SELECT c.name, count(o.id) AS n, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id \
             WHERE c.created_at > '2026-01-01' AND o.status IN ('paid', 'shipped') GROUP BY c.name \
             ORDER BY n DESC LIMIT 20"
                .into(),
        ),
        ("bounded update (60 B)", "UPDATE customers SET email = 'x@example.org' WHERE id = 3".into()),
        ("stacked drop (31 B)", "SELECT 1; DROP TABLE customers".into()),
        ("4 KB read", format!("SELECT c.name FROM customers c WHERE {}", ors.join(" OR "))),
    ]
}

/// Best µs per call of `f` over timed batches.
fn best_of(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..15 {
        let n = 200;
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    best
}

/// Best µs per evaluation over timed batches.
fn time(policy: &Policy, body: &Value) -> (f64, String) {
    let target = normalize_target("/sql").unwrap();
    let headers = HeaderList::default();
    let identity = Identity::new("agent".into(), vec!["analyst".into()], u64::MAX);
    let facts = RequestFacts { method: "POST", target: &target, headers: &headers, identity: Some(&identity) };
    let decide = || match policy.evaluate(&facts, Body::Json(body)) {
        Evaluation::Decided(d) => d.rule.map_or("default", |r| r.name()).to_string(),
        Evaluation::NeedBody => "need body".into(),
    };
    let decision = decide();
    let best = best_of(|| {
        black_box(policy.evaluate(black_box(&facts), black_box(Body::Json(body))));
    });
    (best, decision)
}

fn main() {
    let regex = compile(regex_rules());
    let sql = compile(sql_rules());
    println!("| body | regex rules µs (decision) | sql rules µs (decision) | sql ÷ regex |");
    println!("|---|---|---|---|");
    for (label, query) in queries() {
        let body = json!({ "sql": query });
        let (r, rd) = time(&regex, &body);
        let (s, sd) = time(&sql, &body);
        println!("| {label} | {r:.1} ({rd}) | {s:.1} ({sd}) | {:.2}× |", s / r);
    }
    let dialect = Dialect::named("sqlite").unwrap();
    let none = SensitiveColumns::default();
    let mut sensitive = SensitiveColumns::default();
    let columns = ["email", "phone", "card", "ssn", "iban"].map(String::from).to_vec();
    sensitive.add(Table::parse("customers"), columns);
    println!();
    println!("| body | analysis µs | with sensitive columns µs | ratio | uses found |");
    println!("|---|---|---|---|---|");
    for (label, query) in queries() {
        let plain = best_of(|| {
            let _ = black_box(sql::analyze(black_box(&query), &dialect, &none));
        });
        let followed = best_of(|| {
            let _ = black_box(sql::analyze(black_box(&query), &dialect, &sensitive));
        });
        let uses = sql::analyze(&query, &dialect, &sensitive).map(|a| a.columns.uses.len()).unwrap_or(0);
        println!("| {label} | {plain:.1} | {followed:.1} | {:.2}× | {uses} |", followed / plain);
    }
}
