//! Where the Slack bot posted each approval's message (channel + ts), so that a decision
//! from any channel, or the expiry, rewrites that message.

use sqlx::Row;

use super::db::{Store, StoreError};

/// A posted message still showing a non-final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackMessage {
    pub approval_id: String,
    pub channel: String,
    pub ts: String,
}

impl Store {
    pub async fn put_slack_message(&self, m: &SlackMessage) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO slack_messages (approval_id, channel, ts, closed) VALUES ($1, $2, $3, 0)")
            .bind(&m.approval_id)
            .bind(&m.channel)
            .bind(&m.ts)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn slack_message(&self, approval_id: &str) -> Result<Option<SlackMessage>, StoreError> {
        let row = sqlx::query("SELECT channel, ts FROM slack_messages WHERE approval_id = $1")
            .bind(approval_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| {
            Ok(SlackMessage {
                approval_id: approval_id.to_string(),
                channel: r.try_get("channel")?,
                ts: r.try_get("ts")?,
            })
        })
        .transpose()
    }

    /// Messages of approvals that expired undecided and whose message still says pending.
    pub async fn expired_open_slack_messages(&self, now_ms: i64) -> Result<Vec<SlackMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.approval_id, m.channel, m.ts FROM slack_messages m JOIN approvals a ON a.id = m.approval_id \
             WHERE m.closed = 0 AND a.status = 'pending' AND a.expires_ms <= $1 LIMIT 100",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SlackMessage {
                    approval_id: r.try_get("approval_id")?,
                    channel: r.try_get("channel")?,
                    ts: r.try_get("ts")?,
                })
            })
            .collect()
    }

    /// Marks the message final: nothing will change it any more.
    pub async fn close_slack_message(&self, approval_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE slack_messages SET closed = 1 WHERE approval_id = $1")
            .bind(approval_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
