//! The demo upstream's SQLite database: a small pool of connections to one file.
//!
//! SQL arriving on `POST /sql` is executed for real (that is the point of the demo: a
//! `DROP TABLE` that gets through really drops the table), so there is no sanitising here.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::{json, Value};

use crate::pii::{seed_customers, Customer};

/// Most rows `POST /sql` returns; more are cut off and flagged `"truncated": true`.
pub const MAX_SQL_ROWS: usize = 10_000;

/// A fixed set of connections used round-robin, so concurrent requests rarely wait on
/// each other (SQLite in WAL mode lets readers run in parallel).
pub struct Db {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

/// A database failure, shown to the client as `{"error": "..."}`.
#[derive(Debug)]
pub struct DbError(pub String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError(e.to_string())
    }
}

/// The table, and a view over it as databases have them: what an agent reads through a
/// view carries the table's values under the view's names.
const CREATE: &str = "CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT,
    card TEXT, ssn TEXT, iban TEXT, notes TEXT);
    CREATE VIEW IF NOT EXISTS customer_contacts AS SELECT id, name, email AS contact, phone FROM customers";

impl Db {
    /// Opens (creating if needed) the database at `path` with `pool` connections, creates
    /// the `customers` table if it is missing and seeds it if it is empty.
    pub fn open(path: &Path, pool: usize) -> Result<Db, DbError> {
        let mut conns = Vec::with_capacity(pool.max(1));
        for _ in 0..pool.max(1) {
            let conn =
                Connection::open(path).map_err(|e| DbError(format!("cannot open database {}: {e}", path.display())))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conns.push(Mutex::new(conn));
        }
        let db = Db { conns, next: AtomicUsize::new(0) };
        db.seed()?;
        Ok(db)
    }

    fn seed(&self) -> Result<(), DbError> {
        let mut conn = self.conn()?;
        conn.execute_batch(CREATE)?;
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0))?;
        if count == 0 {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare(
                    "INSERT INTO customers (id, name, email, phone, card, ssn, iban, notes) VALUES (?1, ?2, ?3, ?4, \
                        ?5, ?6, ?7, ?8)",
                )?;
                for c in seed_customers() {
                    stmt.execute(rusqlite::params![c.id, c.name, c.email, c.phone, c.card, c.ssn, c.iban, c.notes])?;
                }
            }
            tx.commit()?;
        }
        Ok(())
    }

    /// A free connection if there is one, else waits for the next in turn.
    fn conn(&self) -> Result<MutexGuard<'_, Connection>, DbError> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            if let Some(Ok(guard)) = self.conns.get((start + k) % n).map(Mutex::try_lock) {
                return Ok(guard);
            }
        }
        // A poisoned lock still holds a usable connection: SQLite keeps its own state.
        let slot = self
            .conns
            .get(start.checked_rem(n).unwrap_or(0))
            .ok_or_else(|| DbError("no database connection".into()))?;
        Ok(slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// All customers ordered by id.
    pub fn customers(&self) -> Result<Vec<Customer>, DbError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT id, name, email, phone, card, ssn, iban, notes FROM customers ORDER BY id")?;
        let rows = stmt.query_map([], row_to_customer)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// One customer, or `None` if there is no row with that id.
    pub fn customer(&self, id: i64) -> Result<Option<Customer>, DbError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT id, name, email, phone, card, ssn, iban, notes FROM customers WHERE id = ?1")?;
        let mut rows = stmt.query_map([id], row_to_customer)?;
        Ok(rows.next().transpose()?)
    }

    /// Names of the tables in the database, sorted.
    pub fn tables(&self) -> Result<Vec<String>, DbError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Executes arbitrary SQL, every statement of it (`SELECT 1; DROP TABLE t` drops the
    /// table). The answer describes the last statement: `{"columns": [...], "rows": [[...]]}`
    /// if it yields columns (SELECT, PRAGMA, WITH ...), else `{"changes": n}`.
    pub fn run_sql(&self, sql: &str) -> Result<Value, DbError> {
        let conn = self.conn()?;
        let mut batch = rusqlite::Batch::new(&conn, sql);
        let mut last = json!({ "changes": 0 });
        while let Some(mut stmt) = batch.next()? {
            last = if stmt.column_count() > 0 {
                query_rows(&mut stmt)?
            } else {
                // sqlite3_changes() keeps a stale count across DDL; the difference of
                // total_changes() counts only what this statement's INSERT/UPDATE/DELETE did.
                let before = total_changes(&conn)?;
                stmt.raw_execute()?;
                json!({ "changes": total_changes(&conn)? - before })
            };
        }
        Ok(last)
    }
}

fn total_changes(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("SELECT total_changes()", [], |r| r.get(0))?)
}

fn query_rows(stmt: &mut rusqlite::Statement<'_>) -> Result<Value, DbError> {
    let columns: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let width = columns.len();
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    let mut truncated = false;
    while let Some(row) = rows.next()? {
        if out.len() == MAX_SQL_ROWS {
            truncated = true;
            break;
        }
        let mut cells = Vec::with_capacity(width);
        for i in 0..width {
            cells.push(value_to_json(row.get_ref(i)?));
        }
        out.push(Value::Array(cells));
    }
    let mut body = serde_json::Map::new();
    body.insert("columns".into(), json!(columns));
    body.insert("rows".into(), Value::Array(out));
    if truncated {
        body.insert("truncated".into(), Value::Bool(true));
    }
    Ok(Value::Object(body))
}

fn row_to_customer(r: &rusqlite::Row<'_>) -> rusqlite::Result<Customer> {
    Ok(Customer {
        id: r.get(0)?,
        name: r.get(1)?,
        email: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        phone: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
        card: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
        ssn: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        iban: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
        notes: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
    })
}

fn value_to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("airlock-demo-db-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        (Db::open(&path, 2).unwrap(), dir)
    }

    #[test]
    fn seeds_customers_once_and_reads_them_back() {
        let (db, dir) = temp_db("seed");
        assert_eq!(db.customers().unwrap(), seed_customers());
        drop(db);
        let db = Db::open(&dir.join("t.db"), 1).unwrap();
        assert_eq!(db.customers().unwrap().len(), 20);
        assert_eq!(db.customer(3).unwrap().unwrap().name, "Carla Diaz");
        assert!(db.customer(999).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn select_returns_columns_and_rows() {
        let (db, dir) = temp_db("select");
        let out = db.run_sql("SELECT id, name FROM customers WHERE id <= 2 ORDER BY id").unwrap();
        assert_eq!(out, json!({"columns": ["id", "name"], "rows": [[1, "Alice Martin"], [2, "Bob Chen"]]}));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stacked_statements_really_run_and_drop_the_table() {
        let (db, dir) = temp_db("stacked");
        assert_eq!(db.run_sql("SELECT 1; DROP TABLE customers").unwrap(), json!({"changes": 0}));
        assert!(db.tables().unwrap().is_empty());
        assert!(db.customers().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn update_reports_changed_rows_and_errors_are_reported() {
        let (db, dir) = temp_db("update");
        assert_eq!(db.run_sql("UPDATE customers SET notes = 'x' WHERE id < 4").unwrap(), json!({"changes": 3}));
        let err = db.run_sql("SELEC nonsense").unwrap_err();
        assert!(err.to_string().contains("syntax error"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
