//! Detector boundaries that hold (issue 14, point 1), through the real filter in a real
//! Envoy against the demo upstream's real SQLite, with the shipped config: the analyst
//! agent chooses a query that glues a dash, an ellipsis, a guillemet, a zero-width space
//! or letters to each sensitive value (or puts an invisible character inside it), and the
//! answer still carries none of the values in clear.
//!
//! A value counts as leaked when a client that decodes the JSON and drops invisible
//! characters (as a reader does) finds it in the answer. Masking a masked answer again
//! (the agent sends it back as literals) changes nothing.

use airlock_e2e::*;
use serde_json::{json, Value};

/// The shipped config without column masking on `/sql` (`sql_result`), which refuses
/// every query here before it runs: these tests are about the detectors, the line that
/// holds on routes where the filter cannot read the query (and behind an approval).
fn stack() -> SharedRef {
    static STACK: SharedStack = SharedStack::new();
    let mut config = test_plugin_config();
    for rule in config["rules"].as_array_mut().unwrap() {
        rule.as_object_mut().unwrap().remove("sql_result");
    }
    STACK.get(|| builder_for(config, TestKeys::shared()).start())
}

fn analyst() -> String {
    auth_for(TestKeys::shared(), "ann", &["analyst"])
}

fn visible(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{ad}' | '\u{feff}')).collect()
}

/// Every string of the `rows` of a `/sql` answer, invisible characters removed.
fn cells(answer: &Value) -> Vec<String> {
    let rows = answer["rows"].as_array().unwrap_or_else(|| panic!("no rows: {answer}"));
    rows.iter().flat_map(|r| r.as_array().unwrap().iter()).filter_map(|v| v.as_str()).map(visible).collect()
}

/// The `column` of every customer, read on the upstream itself (not through Envoy).
fn raw_column(stack: &Stack, column: &str) -> Vec<String> {
    let query = json!({ "sql": format!("SELECT {column} FROM customers ORDER BY id") });
    let reply = send(
        stack.agent(),
        "POST",
        &stack.upstream_url("/sql"),
        &[("content-type", "application/json")],
        Some(query.to_string().as_bytes()),
    )
    .unwrap();
    let values = cells(&reply.json().unwrap());
    assert_eq!(values.len(), 20, "the demo has 20 customers");
    values
}

/// Runs `sql` as the analyst through Envoy and checks that no value of `column` is in the
/// answer, and that the answer has one masked cell per customer.
fn assert_masked(stack: &Stack, sql: &str, column: &str, kind: &str) {
    let reply = stack.post_json("/sql", &[("authorization", &analyst())], &json!({ "sql": sql })).unwrap();
    assert_eq!(reply.status, 200, "{sql}: {}", reply.text());
    let answer = reply.json().unwrap();
    let got = cells(&answer);
    assert_eq!(got.len(), 20, "{sql}: {answer}");
    for secret in raw_column(stack, column) {
        let digits: String = secret.chars().filter(char::is_ascii_alphanumeric).collect();
        for cell in &got {
            assert!(!cell.contains(&secret), "{sql}: {column} {secret:?} leaked in {cell:?}");
            let cell_digits: String = cell.chars().filter(char::is_ascii_alphanumeric).collect();
            assert!(!cell_digits.contains(&digits), "{sql}: {column} {secret:?} leaked in {cell:?}");
        }
    }
    let marker = format!("[REDACTED:{kind}]");
    assert!(got.iter().all(|c| c.contains(&marker)), "{sql}: not every row masked as {kind}: {got:?}");
}

#[test]
fn emails_followed_by_a_dash_ellipsis_guillemet_or_zero_width_space_come_back_masked() {
    let stack = stack();
    for suffix in ["'—'", "'-'", "'–'", "'…'", "'»'", "char(8203)", "char(65279)", "'--x'", "'—' || email"] {
        assert_masked(&stack, &format!("SELECT email || {suffix} AS e FROM customers ORDER BY id"), "email", "email");
    }
}

#[test]
fn values_followed_by_an_at_sign_or_led_by_punctuation_come_back_masked() {
    let stack = stack();
    for (sql, column, kind) in [
        ("SELECT card || '@' AS c FROM customers ORDER BY id", "card", "credit_card"),
        ("SELECT ssn || '@x' AS s FROM customers ORDER BY id", "ssn", "us_ssn"),
        ("SELECT email || '@' || email AS e FROM customers ORDER BY id", "email", "email"),
        ("SELECT '+' || phone AS p FROM customers ORDER BY id", "phone", "phone"),
        ("SELECT '-' || iban || '_' AS i FROM customers ORDER BY id", "iban", "iban"),
    ] {
        assert_masked(&stack, sql, column, kind);
    }
}

/// A `/sql` query selecting each of `cells` as a string literal.
fn literals(cells: &[String]) -> String {
    let columns: Vec<String> =
        cells.iter().enumerate().map(|(i, c)| format!("'{}' AS c{i}", c.replace('\'', "''"))).collect();
    format!("SELECT {}", columns.join(", "))
}

#[test]
fn masking_a_masked_answer_again_changes_nothing() {
    let stack = stack();
    let sql = "SELECT email || '—' || phone || '…' || card || '»' || ssn || char(8203) || iban AS v, \
               'CC' || card AS g, '415 555 0132 / +44 20 7946 0958' AS p FROM customers ORDER BY id LIMIT 5";
    let first = stack.post_json("/sql", &[("authorization", &analyst())], &json!({ "sql": sql })).unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let rows = first.json().unwrap()["rows"].as_array().unwrap().clone();
    let masked: Vec<String> =
        rows.iter().flat_map(|r| r.as_array().unwrap().iter()).map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(masked.len(), 15);
    assert!(masked.iter().all(|c| c.contains("[REDACTED:")), "{masked:?}");
    let again =
        stack.post_json("/sql", &[("authorization", &analyst())], &json!({ "sql": literals(&masked) })).unwrap();
    assert_eq!(again.status, 200, "{}", again.text());
    let back: Vec<String> =
        again.json().unwrap()["rows"][0].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(back, masked, "masking the masked answer changed it");
}

#[test]
fn emails_preceded_by_unicode_punctuation_or_with_a_longer_domain_come_back_masked() {
    let stack = stack();
    for sql in [
        "SELECT '«' || email || '»' AS e FROM customers ORDER BY id",
        "SELECT '—' || email AS e FROM customers ORDER BY id",
        "SELECT email || '.uk--x' AS e FROM customers ORDER BY id",
    ] {
        assert_masked(&stack, sql, "email", "email");
    }
}

#[test]
fn invisible_characters_inside_emails_and_cards_do_not_hide_them() {
    let stack = stack();
    let zwsp = "substr(email, 1, 3) || char(8203) || substr(email, 4)";
    assert_masked(&stack, &format!("SELECT {zwsp} AS e FROM customers ORDER BY id"), "email", "email");
    let shy = "substr(email, 1, instr(email, '@')) || char(173) || substr(email, instr(email, '@') + 1)";
    assert_masked(&stack, &format!("SELECT {shy} AS e FROM customers ORDER BY id"), "email", "email");
    let card = "substr(card, 1, 4) || char(8203) || substr(card, 5)";
    assert_masked(&stack, &format!("SELECT {card} AS c FROM customers ORDER BY id"), "card", "credit_card");
}

#[test]
fn cards_glued_to_letters_or_dashes_come_back_masked() {
    let stack = stack();
    for sql in [
        "SELECT 'CC' || card AS c FROM customers ORDER BY id",
        "SELECT card || '—' AS c FROM customers ORDER BY id",
        "SELECT card || 'x' AS c FROM customers ORDER BY id",
    ] {
        assert_masked(&stack, sql, "card", "credit_card");
    }
}

#[test]
fn phones_written_with_spaces_come_back_masked() {
    let stack = stack();
    let sql = "SELECT '415 555 0132' AS a, '+44 20 7946 0958' AS b, 'call 1 415 555 0132—now' AS c";
    let reply = stack.post_json("/sql", &[("authorization", &analyst())], &json!({ "sql": sql })).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    for phone in ["415 555 0132", "+44 20 7946 0958"] {
        assert!(!text.contains(phone), "{phone} leaked: {text}");
    }
    assert_eq!(text.matches("[REDACTED:phone]").count(), 3, "{text}");
}
