//! Approval requests, approvers' decisions and single-use redemption.
//!
//! Every state change is one conditional UPDATE guarded on the current state
//! (`status = 'pending'`, `used = 0`), so concurrent callers, in this process or in other
//! replicas, cannot both win: the database decides, and the loser sees 0 rows affected.

use airlock_wire::{ApprovalErrorCode, ApprovalStatus, Mode};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::db::{parse_string_list, string_list_json, Bind, Store, StoreError};

/// An approver's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

/// A validated approval request from the filter.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub rule: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub method: String,
    pub path: String,
    pub body: String,
    pub digest: String,
    pub reason: Option<String>,
    pub session_id: String,
    pub mode: Mode,
    pub ttl_seconds: i64,
    pub approver_groups: Vec<String>,
    pub required: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub approver: String,
    pub decision: String,
    pub reason: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Approval {
    pub id: String,
    pub rule: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub method: String,
    pub path: String,
    pub body: String,
    pub digest: String,
    pub reason: Option<String>,
    pub session_id: String,
    pub mode: Mode,
    pub approver_groups: Vec<String>,
    pub required: i64,
    stored_status: String,
    pub used: bool,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub decided_ms: Option<i64>,
    pub decisions: Vec<Decision>,
}

impl Approval {
    /// The status at `now`: a pending approval past its deadline is expired.
    pub fn status(&self, now_ms: i64) -> ApprovalStatus {
        match ApprovalStatus::parse(&self.stored_status) {
            Some(ApprovalStatus::Pending) if now_ms >= self.expires_ms => ApprovalStatus::Expired,
            Some(s) => s,
            // Unknown text can only come from a hand-edited row: never treat it as approved.
            None => ApprovalStatus::Denied,
        }
    }
}

/// Why a decision was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("approval not found")]
    NotFound,
    #[error("approval is already {}", .0.as_str())]
    NotPending(ApprovalStatus),
    #[error("this approver has already decided on this approval")]
    AlreadyDecided,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a redemption failed; each maps to one `approval_*` error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedeemError {
    #[error("approval not found")]
    NotFound,
    #[error("the approval was granted for a different request or identity")]
    DigestMismatch,
    #[error("the approval has already been used")]
    AlreadyUsed,
    #[error("the approval has expired")]
    Expired,
    #[error("an approver denied this request")]
    Denied,
    #[error("the approval is not approved (status: {0})")]
    NotApproved(&'static str),
}

impl RedeemError {
    pub fn code(&self) -> ApprovalErrorCode {
        match self {
            RedeemError::NotFound => ApprovalErrorCode::ApprovalNotFound,
            RedeemError::DigestMismatch => ApprovalErrorCode::ApprovalDigestMismatch,
            RedeemError::AlreadyUsed => ApprovalErrorCode::ApprovalAlreadyUsed,
            RedeemError::Expired => ApprovalErrorCode::ApprovalExpired,
            RedeemError::Denied => ApprovalErrorCode::ApprovalDenied,
            RedeemError::NotApproved(_) => ApprovalErrorCode::ApprovalNotApproved,
        }
    }
}

const APPROVAL_COLUMNS: &str = "id, rule, subject, groups_json, method, path, body, digest, reason, session_id, mode, \
     approver_groups_json, required, status, used, created_ms, expires_ms, decided_ms";

fn approval_from_row(row: &AnyRow) -> Result<Approval, StoreError> {
    Ok(Approval {
        id: row.try_get("id")?,
        rule: row.try_get("rule")?,
        subject: row.try_get("subject")?,
        groups: parse_string_list("groups_json", &row.try_get::<String, _>("groups_json")?)?,
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        body: row.try_get("body")?,
        digest: row.try_get("digest")?,
        reason: row.try_get("reason")?,
        session_id: row.try_get("session_id")?,
        mode: {
            let mode: String = row.try_get("mode")?;
            Mode::parse(&mode)
                .ok_or_else(|| StoreError::Corrupt("column `mode` is neither `hold` nor `ticket`".into()))?
        },
        approver_groups: parse_string_list("approver_groups_json", &row.try_get::<String, _>("approver_groups_json")?)?,
        required: row.try_get("required")?,
        stored_status: row.try_get("status")?,
        used: row.try_get::<i64, _>("used")? != 0,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        decided_ms: row.try_get("decided_ms")?,
        decisions: Vec::new(),
    })
}

impl Store {
    /// Stores a new pending approval and returns it.
    pub async fn create_approval(&self, id: &str, new: &NewApproval, now_ms: i64) -> Result<Approval, StoreError> {
        let expires_ms = now_ms.saturating_add(new.ttl_seconds.saturating_mul(1000));
        sqlx::query(
            "INSERT INTO approvals (id, rule, subject, groups_json, method, path, body, digest, reason, session_id, \
             mode, approver_groups_json, required, status, used, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending', 0, $14, $15)",
        )
        .bind(id)
        .bind(&new.rule)
        .bind(&new.subject)
        .bind(string_list_json(&new.groups))
        .bind(&new.method)
        .bind(&new.path)
        .bind(&new.body)
        .bind(&new.digest)
        .bind(new.reason.as_deref())
        .bind(&new.session_id)
        .bind(new.mode.as_str())
        .bind(string_list_json(&new.approver_groups))
        .bind(new.required)
        .bind(now_ms)
        .bind(expires_ms)
        .execute(self.pool())
        .await?;
        self.get_approval(id).await?.ok_or_else(|| StoreError::Corrupt("a just-created approval is missing".into()))
    }

    /// The approval with its decisions, oldest decision first.
    pub async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1");
        let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(self.pool()).await? else {
            return Ok(None);
        };
        let mut approval = approval_from_row(&row)?;
        approval.decisions = self.decisions_of(id).await?;
        Ok(Some(approval))
    }

    async fn decisions_of(&self, id: &str) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query(
            "SELECT approver, decision, reason, at_ms FROM approval_decisions WHERE approval_id = $1 \
             ORDER BY at_ms, approver",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Decision {
                    approver: r.try_get("approver")?,
                    decision: r.try_get("decision")?,
                    reason: r.try_get("reason")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }

    /// Approvals in `status` (all when `None`), newest first, at most `limit`.
    pub async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        let (filter, binds): (&str, Vec<Bind>) = match status {
            None => ("", vec![Bind::I64(limit)]),
            Some(ApprovalStatus::Pending) => {
                ("WHERE status = 'pending' AND expires_ms > $2", vec![Bind::I64(limit), Bind::I64(now_ms)])
            }
            Some(ApprovalStatus::Expired) => {
                ("WHERE status = 'pending' AND expires_ms <= $2", vec![Bind::I64(limit), Bind::I64(now_ms)])
            }
            Some(s) => ("WHERE status = $2", vec![Bind::I64(limit), Bind::Text(s.as_str().to_string())]),
        };
        let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals {filter} ORDER BY created_ms DESC, id LIMIT $1");
        let rows = super::db::bind_all(sqlx::query(&sql), &binds).fetch_all(self.pool()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut a = approval_from_row(row)?;
            a.decisions = self.decisions_of(&a.id).await?;
            out.push(a);
        }
        Ok(out)
    }

    /// Records `approver`'s verdict and moves the approval to approved (when `required`
    /// distinct approvers approved) or denied (on any deny). The caller has already checked
    /// that the approver may decide (group membership, not the requester).
    pub async fn decide(
        &self,
        id: &str,
        approver: &str,
        verdict: Verdict,
        reason: &str,
        now_ms: i64,
    ) -> Result<Approval, DecideError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::from)?;
        // Taking the row lock first serializes deciders of one approval, so that two
        // approvers finishing an N-of-M quorum at once both count each other's vote.
        let locked = sqlx::query(
            "UPDATE approvals SET version = version + 1 WHERE id = $1 AND status = 'pending' AND expires_ms > $2",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if locked.rows_affected() == 0 {
            drop(tx);
            return match self.get_approval(id).await? {
                None => Err(DecideError::NotFound),
                Some(a) => Err(DecideError::NotPending(a.status(now_ms))),
            };
        }
        let inserted = sqlx::query(
            "INSERT INTO approval_decisions (approval_id, approver, decision, reason, at_ms) VALUES ($1, $2, $3, $4, \
                $5) \
             ON CONFLICT (approval_id, approver) DO NOTHING",
        )
        .bind(id)
        .bind(approver)
        .bind(verdict.as_str())
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if inserted.rows_affected() == 0 {
            return Err(DecideError::AlreadyDecided);
        }
        let new_status = match verdict {
            Verdict::Deny => Some(ApprovalStatus::Denied),
            Verdict::Approve => {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n, (SELECT required FROM approvals WHERE id = $1) AS required \
                     FROM approval_decisions WHERE approval_id = $1 AND decision = 'approve'",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from)?;
                let n: i64 = row.try_get("n").map_err(StoreError::from)?;
                let required: i64 = row.try_get("required").map_err(StoreError::from)?;
                (n >= required).then_some(ApprovalStatus::Approved)
            }
        };
        if let Some(status) = new_status {
            sqlx::query("UPDATE approvals SET status = $2, decided_ms = $3 WHERE id = $1 AND status = 'pending'")
                .bind(id)
                .bind(status.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.get_approval(id).await?.ok_or(DecideError::NotFound)
    }

    /// Consumes an approved approval for the request with `digest` by `subject`: succeeds
    /// exactly once, however many callers race.
    pub async fn redeem(
        &self,
        id: &str,
        digest: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Result<(), RedeemError>, StoreError> {
        let won = sqlx::query(
            "UPDATE approvals SET used = 1, used_ms = $5 WHERE id = $1 AND status = 'approved' AND used = 0 \
             AND digest = $2 AND subject = $3 AND expires_ms > $4",
        )
        .bind(id)
        .bind(digest)
        .bind(subject)
        .bind(now_ms)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        if won.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        // Lost: explain why. Binding checks come first so that a caller holding only an id
        // learns nothing about the state of someone else's approval.
        let Some(a) = self.get_approval(id).await? else {
            return Ok(Err(RedeemError::NotFound));
        };
        let err = if a.digest != digest || a.subject != subject {
            RedeemError::DigestMismatch
        } else if a.used {
            RedeemError::AlreadyUsed
        } else if now_ms >= a.expires_ms {
            RedeemError::Expired
        } else {
            match a.status(now_ms) {
                // Said plainly, so the agent stops retrying a ticket that will never work.
                ApprovalStatus::Denied => RedeemError::Denied,
                other => RedeemError::NotApproved(other.as_str()),
            }
        };
        Ok(Err(err))
    }
}
