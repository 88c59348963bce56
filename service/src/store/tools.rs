//! MCP tool-definition pins: the first definition a filter reports for a tool of an
//! upstream is its pin (trust on first use); a different one is recorded as a pending
//! change, once, until an approver accepts it and it becomes the pin. A change that a
//! newer definition replaces before anyone accepted it is `superseded`: an approver
//! accepts exactly what the alert named.

use airlock_wire::{PendingChange, ToolChangeStatus, ToolObservation, ToolPin};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::db::{Store, StoreError};

/// One recorded change, as approvers list it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ToolChange {
    pub id: String,
    pub upstream: String,
    pub tool: String,
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    pub status: ToolChangeStatus,
    pub observed_ms: i64,
    pub accepted_by: Option<String>,
    pub decided_ms: Option<i64>,
}

/// Why an acceptance was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("tool change not found")]
    NotFound,
    #[error("the tool change is already {}", .0.as_str())]
    NotPending(ToolChangeStatus),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AcceptError {
    fn from(e: sqlx::Error) -> Self {
        AcceptError::Store(e.into())
    }
}

const CHANGE_COLUMNS: &str =
    "id, upstream, tool, old_fingerprint, new_fingerprint, status, observed_ms, accepted_by, decided_ms";

fn change_from_row(row: &AnyRow) -> Result<ToolChange, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(ToolChange {
        id: row.try_get("id")?,
        upstream: row.try_get("upstream")?,
        tool: row.try_get("tool")?,
        old_fingerprint: row.try_get("old_fingerprint")?,
        new_fingerprint: row.try_get("new_fingerprint")?,
        status: ToolChangeStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("tool change status `{status}`")))?,
        observed_ms: row.try_get("observed_ms")?,
        accepted_by: row.try_get("accepted_by")?,
        decided_ms: row.try_get("decided_ms")?,
    })
}

impl Store {
    /// Records what a filter saw: each observation with the id its change gets if it is
    /// one. Returns the changes recorded now (each raises an alert); a change already
    /// pending for the same definition is not recorded again.
    pub async fn observe_tools(
        &self,
        observations: &[(ToolObservation, String)],
        now_ms: i64,
    ) -> Result<Vec<ToolChange>, StoreError> {
        let mut changes = Vec::new();
        let mut tx = self.pool().begin().await?;
        for (o, id) in observations {
            // Trust on first use, of what the filter first saw: a concurrent first report
            // is the same trust.
            sqlx::query(
                "INSERT INTO tool_pins (upstream, tool, fingerprint, pinned_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&o.upstream)
            .bind(&o.tool)
            .bind(&o.pin)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            let pin: String = sqlx::query("SELECT fingerprint FROM tool_pins WHERE upstream = $1 AND tool = $2")
                .bind(&o.upstream)
                .bind(&o.tool)
                .fetch_one(&mut *tx)
                .await?
                .try_get("fingerprint")?;
            if pin == o.fingerprint {
                continue;
            }
            sqlx::query(
                "UPDATE tool_changes SET status = 'superseded', decided_ms = $4 \
                 WHERE upstream = $1 AND tool = $2 AND status = 'pending' AND new_fingerprint <> $3",
            )
            .bind(&o.upstream)
            .bind(&o.tool)
            .bind(&o.fingerprint)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            let inserted = sqlx::query(
                "INSERT INTO tool_changes (id, upstream, tool, old_fingerprint, new_fingerprint, status, observed_ms) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&o.upstream)
            .bind(&o.tool)
            .bind(&pin)
            .bind(&o.fingerprint)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                changes.push(ToolChange {
                    id: id.clone(),
                    upstream: o.upstream.clone(),
                    tool: o.tool.clone(),
                    old_fingerprint: pin,
                    new_fingerprint: o.fingerprint.clone(),
                    status: ToolChangeStatus::Pending,
                    observed_ms: now_ms,
                    accepted_by: None,
                    decided_ms: None,
                });
            }
        }
        tx.commit().await?;
        Ok(changes)
    }

    /// Every pin, with the change pending for it if there is one.
    pub async fn tool_pins(&self) -> Result<Vec<ToolPin>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.upstream AS upstream, p.tool AS tool, p.fingerprint AS fingerprint, c.id AS change_id, \
                c.new_fingerprint AS new_fingerprint \
             FROM tool_pins p LEFT JOIN tool_changes c \
                ON c.upstream = p.upstream AND c.tool = p.tool AND c.status = 'pending' \
             ORDER BY p.upstream, p.tool",
        )
        .fetch_all(self.pool())
        .await?;
        let mut pins = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: Option<String> = row.try_get("change_id")?;
            let new: Option<String> = row.try_get("new_fingerprint")?;
            pins.push(ToolPin {
                upstream: row.try_get("upstream")?,
                tool: row.try_get("tool")?,
                fingerprint: row.try_get("fingerprint")?,
                pending: id.zip(new).map(|(id, fingerprint)| PendingChange { id, fingerprint }),
            });
        }
        Ok(pins)
    }

    /// Recorded changes, newest first; `status` narrows them.
    pub async fn tool_changes(
        &self,
        status: Option<ToolChangeStatus>,
        limit: i64,
    ) -> Result<Vec<ToolChange>, StoreError> {
        let rows = match status {
            Some(s) => {
                let sql = format!(
                    "SELECT {CHANGE_COLUMNS} FROM tool_changes WHERE status = $1 ORDER BY observed_ms DESC, id LIMIT $2"
                );
                sqlx::query(&sql).bind(s.as_str()).bind(limit).fetch_all(self.pool()).await?
            }
            None => {
                let sql = format!("SELECT {CHANGE_COLUMNS} FROM tool_changes ORDER BY observed_ms DESC, id LIMIT $1");
                sqlx::query(&sql).bind(limit).fetch_all(self.pool()).await?
            }
        };
        rows.iter().map(change_from_row).collect()
    }

    /// An approver accepts a pending change: its definition becomes the tool's pin.
    pub async fn accept_tool_change(&self, id: &str, approver: &str, now_ms: i64) -> Result<ToolChange, AcceptError> {
        let mut tx = self.pool().begin().await?;
        // The guarded write comes first: it takes SQLite's write lock before anything is
        // read. A read first would start a snapshot that an audit batch committed in
        // between makes stale, and SQLite then fails the write at once (SQLITE_BUSY, no
        // busy wait). Of two approvers accepting at once, one wins.
        let won = sqlx::query(
            "UPDATE tool_changes SET status = 'accepted', accepted_by = $2, decided_ms = $3 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(approver)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let sql = format!("SELECT {CHANGE_COLUMNS} FROM tool_changes WHERE id = $1");
        let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await? else {
            return Err(AcceptError::NotFound);
        };
        let mut change = change_from_row(&row)?;
        if won.rows_affected() != 1 {
            return Err(AcceptError::NotPending(change.status));
        }
        sqlx::query("UPDATE tool_pins SET fingerprint = $3, pinned_ms = $4 WHERE upstream = $1 AND tool = $2")
            .bind(&change.upstream)
            .bind(&change.tool)
            .bind(&change.new_fingerprint)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        change.status = ToolChangeStatus::Accepted;
        change.accepted_by = Some(approver.to_string());
        change.decided_ms = Some(now_ms);
        Ok(change)
    }
}
