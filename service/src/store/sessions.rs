//! Session views over the audit log: a session is the records sharing a `session_id`.

use std::collections::BTreeMap;

use airlock_wire::Decision;
use serde::Serialize;
use sqlx::Row;

use super::audit::{record_from_row, StoredRecord, RECORD_COLUMNS};
use super::db::{bind_all, Bind, Store, StoreError};

/// Filters for listing sessions; all optional and combined with AND.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub subject: Option<String>,
    /// Only records at or after this instant (Unix ms) are counted.
    pub from_ms: Option<i64>,
    /// Only records at or before this instant (Unix ms) are counted.
    pub to_ms: Option<i64>,
    /// Only sessions with at least one record of this decision.
    pub decision: Option<Decision>,
    /// Only sessions with at least one record under this policy rule.
    pub rule: Option<String>,
    /// Only sessions with at least one request whose path starts with this prefix.
    pub path_prefix: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionSummary {
    pub session_id: String,
    pub subject: String,
    pub first_ms: i64,
    pub last_ms: i64,
    pub count: i64,
    /// Number of records per decision, e.g. `{"allow": 3, "denied_by_rule": 1}`.
    pub decisions: BTreeMap<String, i64>,
}

/// The most records a session timeline returns; replay works on this many at most.
pub const MAX_TIMELINE: i64 = 10_000;

impl Store {
    /// Sessions matching `filter`, most recently active first.
    pub async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>, StoreError> {
        let mut binds = Vec::new();
        let mut clauses = Vec::new();
        let mut push = |clause: &str, bind: Bind, binds: &mut Vec<Bind>| {
            binds.push(bind);
            clauses.push(clause.replace('?', &format!("${}", binds.len())));
        };
        if let Some(s) = &filter.subject {
            push("subject = ?", Bind::Text(s.clone()), &mut binds);
        }
        if let Some(f) = filter.from_ms {
            push("time_ms >= ?", Bind::I64(f), &mut binds);
        }
        if let Some(t) = filter.to_ms {
            push("time_ms <= ?", Bind::I64(t), &mut binds);
        }
        if let Some(d) = &filter.decision {
            push(
                "session_id IN (SELECT session_id FROM audit_records WHERE decision = ?)",
                Bind::Text(d.as_str().to_string()),
                &mut binds,
            );
        }
        if let Some(r) = &filter.rule {
            push(
                "session_id IN (SELECT session_id FROM audit_records WHERE rule = ?)",
                Bind::Text(r.clone()),
                &mut binds,
            );
        }
        if let Some(p) = &filter.path_prefix {
            // A plain prefix comparison: no LIKE wildcards to escape, and the same
            // case-sensitive answer on SQLite and PostgreSQL.
            push(
                "session_id IN (SELECT session_id FROM audit_records WHERE substr(path, 1, length(?)) = ?)",
                Bind::Text(p.clone()),
                &mut binds,
            );
        }
        let where_sql = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        binds.push(Bind::I64(filter.limit));
        let limit_param = binds.len();
        let sql = format!(
            "SELECT session_id, MIN(subject) AS subject, MIN(time_ms) AS first_ms, MAX(time_ms) AS last_ms, COUNT(*) \
                AS n \
             FROM audit_records {where_sql} GROUP BY session_id ORDER BY MAX(time_ms) DESC,
                 session_id LIMIT ${limit_param}"
        );
        let rows = bind_all(sqlx::query(&sql), &binds).fetch_all(self.pool()).await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in &rows {
            sessions.push(SessionSummary {
                session_id: row.try_get("session_id")?,
                subject: row.try_get("subject")?,
                first_ms: row.try_get("first_ms")?,
                last_ms: row.try_get("last_ms")?,
                count: row.try_get("n")?,
                decisions: BTreeMap::new(),
            });
        }
        if sessions.is_empty() {
            return Ok(sessions);
        }
        // Per-decision counts under the same filter; merged into the page's sessions.
        binds.pop();
        let sql = format!(
            "SELECT session_id, decision, COUNT(*) AS n FROM audit_records {where_sql} GROUP BY session_id, decision"
        );
        let rows = bind_all(sqlx::query(&sql), &binds).fetch_all(self.pool()).await?;
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for (i, s) in sessions.iter().enumerate() {
            index.insert(s.session_id.clone(), i);
        }
        for row in &rows {
            let sid: String = row.try_get("session_id")?;
            if let Some(s) = index.get(&sid).and_then(|&i| sessions.get_mut(i)) {
                s.decisions.insert(row.try_get("decision")?, row.try_get("n")?);
            }
        }
        Ok(sessions)
    }

    /// The records of one session in chain order (at most [`MAX_TIMELINE`]).
    pub async fn session_timeline(&self, session_id: &str) -> Result<Vec<StoredRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE session_id = $1 ORDER BY seq LIMIT $2");
        let rows = sqlx::query(&sql).bind(session_id).bind(MAX_TIMELINE).fetch_all(self.pool()).await?;
        rows.iter().map(record_from_row).collect()
    }
}
