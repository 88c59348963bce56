//! Column lineage: the shapes an agent uses to get a sensitive value past masking —
//! halves, encodings, concatenations, aggregates, aliases, `*` through joins, views,
//! subqueries and CTEs, oracles in filters — and the plain reads that must still pass.

use super::*;

fn sensitive() -> SensitiveColumns {
    let mut s = SensitiveColumns::default();
    let names = ["email", "phone", "card", "ssn", "iban"].map(String::from).to_vec();
    s.add(Table::parse("customers"), names);
    s.add(None, vec!["api_token".into()]);
    s
}

fn uses(sql: &str) -> ColumnUses {
    analyze(sql, &Dialect::named("sqlite").unwrap(), &sensitive()).unwrap_or_else(|e| panic!("{sql}: {e}")).columns
}

fn kinds(u: &ColumnUses) -> Vec<&'static str> {
    let mut k: Vec<&'static str> = u.uses.iter().map(|u| u.kind.as_str()).collect();
    k.sort_unstable();
    k.dedup();
    k
}

fn returned(sql: &str) -> Vec<String> {
    let u = uses(sql);
    assert_eq!(kinds(&u), ["column"], "{sql}: {:?}", u.uses);
    u.returned
}

fn transforms(sql: &str) -> Vec<String> {
    let u = uses(sql);
    let found: Vec<String> = u.uses.iter().filter(|u| u.kind == UseKind::Transform).map(|u| u.to_string()).collect();
    assert!(!found.is_empty(), "{sql}: no transform in {:?}", u.uses);
    found
}

fn predicates(sql: &str) -> Vec<String> {
    let u = uses(sql);
    let found: Vec<String> = u.uses.iter().filter(|u| u.kind == UseKind::Predicate).map(|u| u.to_string()).collect();
    assert!(!found.is_empty(), "{sql}: no predicate in {:?}", u.uses);
    found
}

#[test]
fn a_sensitive_column_returned_bare_or_aliased_is_returned_under_its_result_name() {
    assert_eq!(returned("SELECT id, email FROM customers"), ["email"]);
    assert_eq!(returned("SELECT email AS x, c.card AS \"Y\" FROM customers c"), ["x", "y"]);
    assert_eq!(returned("SELECT customers.ssn FROM main.customers"), ["ssn"]);
    assert_eq!(returned("SELECT DISTINCT phone FROM customers WHERE id = 3 ORDER BY id"), ["phone"]);
}

#[test]
fn star_returns_every_sensitive_column_of_the_table() {
    assert_eq!(returned("SELECT * FROM customers"), ["email", "phone", "card", "ssn", "iban", "api_token"]);
    assert_eq!(returned("SELECT c.* FROM customers c JOIN orders o ON o.customer_id = c.id").len(), 6);
    // Another table's `*`: only the columns sensitive everywhere.
    assert_eq!(returned("SELECT * FROM orders"), ["api_token"]);
}

#[test]
fn aliases_follow_through_subqueries_ctes_and_column_lists() {
    assert_eq!(returned("SELECT x FROM (SELECT email AS x FROM customers) t"), ["x"]);
    assert_eq!(returned("WITH c AS (SELECT card AS n FROM customers) SELECT n AS m FROM c"), ["m"]);
    assert_eq!(returned("WITH c(a, b) AS (SELECT id, ssn FROM customers) SELECT b FROM c"), ["b"]);
    assert_eq!(returned("SELECT * FROM (SELECT * FROM customers) AS t").len(), 6);
    assert_eq!(returned("WITH v AS (SELECT * FROM customers) SELECT v.email AS e FROM v"), ["e"]);
    assert_eq!(returned("SELECT name FROM customers UNION SELECT email FROM customers"), ["name"]);
}

#[test]
fn halves_encodings_concatenations_and_aggregates_are_transforms() {
    for sql in [
        "SELECT substr(card,1,8) AS a, substr(card,9,8) AS b FROM customers",
        "SELECT hex(ssn) AS h FROM customers",
        "SELECT email || '—' AS e FROM customers",
        "SELECT group_concat(email) FROM customers",
        "SELECT CAST(card AS INTEGER) + 0 AS n FROM customers",
        "SELECT CASE WHEN ssn > '5' THEN 1 ELSE 0 END AS s FROM customers",
        "SELECT length(iban) FROM customers",
        "SELECT (email) FROM customers",
        "SELECT email COLLATE NOCASE AS e FROM customers",
        "SELECT (SELECT email FROM customers LIMIT 1) AS e",
        "SELECT a FROM (SELECT upper(email) AS a FROM customers)",
        "WITH h AS (SELECT hex(ssn) AS x FROM customers) SELECT x FROM h",
        "SELECT x FROM (SELECT lower(c.email) AS x FROM customers c JOIN orders o ON o.cid = c.id)",
        "SELECT value FROM customers, json_each(json_array(email))",
        "SELECT 1 AS one UNION ALL SELECT substr(ssn, 1, 3) FROM customers",
        "VALUES ((SELECT card FROM customers LIMIT 1))",
    ] {
        transforms(sql);
    }
    let found = transforms("SELECT substr(card,1,8) AS a FROM customers");
    assert_eq!(found, ["customers.card (result column `a` computes it with SUBSTRING)"]);
}

#[test]
fn filters_joins_groupings_and_orderings_on_sensitive_columns_are_predicates() {
    for sql in [
        "SELECT id FROM customers WHERE ssn LIKE '12%'",
        "SELECT id FROM customers WHERE substr(card, 1, 1) = '4'",
        "SELECT id FROM customers ORDER BY ssn",
        "SELECT id FROM customers ORDER BY substr(ssn, 5, 1)",
        "SELECT count(*) FROM customers GROUP BY substr(ssn, 1, 3)",
        "SELECT id FROM customers c JOIN leaked l ON l.v = c.card",
        "SELECT id FROM customers JOIN leaked USING (email)",
        "SELECT id FROM customers NATURAL JOIN leaked",
        "SELECT id FROM customers WHERE EXISTS (SELECT 1 FROM customers c2 WHERE c2.email = 'a@b.co')",
        "SELECT name FROM orders WHERE name IN (SELECT email FROM customers)",
        "SELECT email AS e FROM customers ORDER BY e",
        "DELETE FROM customers WHERE ssn = '123-45-6789'",
        "SELECT id FROM (SELECT id, ssn FROM customers) t WHERE t.ssn > '5'",
    ] {
        predicates(sql);
    }
}

#[test]
fn plain_reads_of_other_columns_use_nothing_sensitive() {
    for sql in [
        "SELECT id, name FROM customers WHERE id = 3 ORDER BY name",
        "SELECT count(*) FROM customers",
        "SELECT o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.name = 'Ann'",
        "SELECT upper(name) FROM customers",
        "SELECT email FROM orders",
    ] {
        assert_eq!(uses(sql), ColumnUses::default(), "{sql}");
    }
}

#[test]
fn writes_that_copy_a_sensitive_column_are_transforms() {
    transforms("UPDATE customers SET notes = email WHERE id = 1");
    transforms("INSERT INTO notes (body) SELECT ssn FROM customers");
    assert_eq!(uses("UPDATE customers SET name = 'x' WHERE id = 1 RETURNING email").returned, ["email"]);
}

#[test]
fn results_whose_columns_cannot_be_told_apart_are_transforms() {
    transforms("SELECT * FROM customers UNION SELECT * FROM customers");
    transforms("SELECT id FROM orders UNION SELECT * FROM customers");
    transforms("WITH c(a, b) AS (SELECT * FROM customers) SELECT a FROM c");
    transforms("SELECT * FROM customers AS c(a, b, e)");
}
