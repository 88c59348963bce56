//! The audit log: idempotent, hash-chained appends and chain verification.

use std::borrow::Cow;
use std::collections::HashSet;

use airlock_wire::Decision;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::db::{bind_all, parse_string_list, string_list_json, Bind, Store, StoreError};
use crate::chain::{record_hash, AuditRecord, GENESIS_HASH};

/// Outcome of one batch append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    pub accepted: usize,
    pub duplicates: usize,
    /// Indexes (into the batch) of the records stored now, for alerting.
    pub stored: Vec<usize>,
}

/// A record as stored, with its position and chain links.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
    pub received_ms: i64,
}

/// Result of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// Number of records in the store.
    pub records: i64,
    /// Sequence number where the first problem shows.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
}

pub(crate) const RECORD_COLUMNS: &str =
    "seq, id, time_ms, subject, groups_json, session_id, method, path, request_body, status, \
     response_body, decision, rule, approval_id, latency_ms, reason, prev_hash, hash, received_ms, credential_json";

pub(crate) fn record_from_row(row: &AnyRow) -> Result<StoredRecord, StoreError> {
    let text = |name: &str| -> Result<String, StoreError> { Ok(row.try_get(name)?) };
    let opt_text = |name: &str| -> Result<Option<Cow<'static, str>>, StoreError> {
        Ok(row.try_get::<Option<String>, _>(name)?.map(Cow::Owned))
    };
    let decision = text("decision")?;
    Ok(StoredRecord {
        seq: row.try_get("seq")?,
        record: AuditRecord {
            id: text("id")?.into(),
            time_ms: unsigned(row, "time_ms")?,
            subject: text("subject")?.into(),
            groups: parse_string_list("groups_json", &text("groups_json")?)?.into(),
            session_id: text("session_id")?.into(),
            method: text("method")?.into(),
            path: text("path")?.into(),
            request_body: opt_text("request_body")?,
            status: unsigned(row, "status")?,
            response_body: opt_text("response_body")?,
            decision: Decision::parse(&decision).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "column `decision` holds `{}`, not a decision the filter writes",
                    decision.chars().take(40).collect::<String>()
                ))
            })?,
            rule: opt_text("rule")?,
            approval_id: opt_text("approval_id")?,
            latency_ms: unsigned(row, "latency_ms")?,
            reason: opt_text("reason")?,
            credential: match row.try_get::<Option<String>, _>("credential_json")? {
                None => None,
                Some(json) => {
                    Some(serde_json::from_str(&json).map_err(|_| {
                        StoreError::Corrupt("column `credential_json` does not hold a credential".into())
                    })?)
                }
            },
        },
        prev_hash: text("prev_hash")?,
        hash: text("hash")?,
        received_ms: row.try_get("received_ms")?,
    })
}

/// A BIGINT column that holds a non-negative number of the record's type.
fn unsigned<T: TryFrom<i64>>(row: &AnyRow, column: &str) -> Result<T, StoreError> {
    T::try_from(row.try_get::<i64, _>(column)?)
        .map_err(|_| StoreError::Corrupt(format!("column `{column}` is out of range")))
}

fn opt_text(v: &Option<Cow<'static, str>>) -> Bind {
    Bind::OptText(v.as_deref().map(str::to_string))
}

/// The BIGINT form of a record's number. Batches are checked to fit before they are
/// appended, so this never saturates for what the API accepts.
fn signed(v: impl Into<u64>) -> i64 {
    i64::try_from(v.into()).unwrap_or(i64::MAX)
}

/// Records per multi-row INSERT: 20 parameters each stays far below SQLite's and
/// PostgreSQL's parameter limits.
const INSERT_CHUNK: usize = 200;
/// Ids per duplicate lookup.
const LOOKUP_CHUNK: usize = 500;

/// Records read per query while verifying, bounding memory for large logs.
const VERIFY_PAGE: i64 = 1000;

impl Store {
    /// Appends the records not yet stored (by id) to the chain, in batch order, in one
    /// transaction. Only one appender runs at a time: an in-process mutex plus a lock on the
    /// chain-head row, which also serializes replicas sharing a PostgreSQL database.
    pub async fn append_audit(&self, records: &[AuditRecord], now_ms: i64) -> Result<AppendOutcome, StoreError> {
        let _guard = self.chain_lock.lock().await;
        let mut tx = self.pool().begin().await?;
        // A no-op UPDATE as the first statement: a row lock on PostgreSQL, the write lock on
        // SQLite. Reading the head only after it makes the read-modify-write safe.
        sqlx::query("UPDATE audit_chain_head SET seq = seq WHERE id = 1").execute(&mut *tx).await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1").fetch_one(&mut *tx).await?;
        let mut seq: i64 = head.try_get("seq")?;
        let mut prev: String = head.try_get("hash")?;
        // Which ids are already stored? Checked under the lock, so the answer stays true
        // until commit; repeats inside the batch count as duplicates too.
        let mut known: HashSet<String> = HashSet::new();
        let unique: Vec<&str> = {
            let mut seen = HashSet::new();
            records.iter().map(|r| r.id.as_ref()).filter(|id| seen.insert(*id)).collect()
        };
        for chunk in unique.chunks(LOOKUP_CHUNK) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| self.placeholder(i)).collect();
            let sql = format!("SELECT id FROM audit_records WHERE id IN ({})", placeholders.join(", "));
            let binds: Vec<Bind> = chunk.iter().map(|id| Bind::Text((*id).to_string())).collect();
            for row in bind_all(sqlx::query(&sql), &binds).fetch_all(&mut *tx).await? {
                known.insert(row.try_get("id")?);
            }
        }
        let mut stored = Vec::new();
        let mut rows: Vec<Vec<Bind>> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if !known.insert(r.id.to_string()) {
                continue;
            }
            seq += 1;
            let hash = record_hash(&prev, seq, r);
            rows.push(vec![
                Bind::I64(seq),
                Bind::Text(r.id.to_string()),
                Bind::I64(signed(r.time_ms)),
                Bind::Text(r.subject.to_string()),
                Bind::Text(string_list_json(&r.groups)),
                Bind::Text(r.session_id.to_string()),
                Bind::Text(r.method.to_string()),
                Bind::Text(r.path.to_string()),
                opt_text(&r.request_body),
                Bind::I64(signed(r.status)),
                opt_text(&r.response_body),
                Bind::Text(r.decision.as_str().to_string()),
                opt_text(&r.rule),
                opt_text(&r.approval_id),
                Bind::I64(signed(r.latency_ms)),
                opt_text(&r.reason),
                Bind::Text(prev.clone()),
                Bind::Text(hash.clone()),
                Bind::I64(now_ms),
                Bind::OptText(r.credential.as_ref().and_then(|c| serde_json::to_string(c).ok())),
            ]);
            prev = hash;
            stored.push(i);
        }
        // Multi-row INSERTs: one round trip per chunk instead of per record.
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut values = Vec::with_capacity(chunk.len());
            let mut n = 0;
            for row in chunk {
                let ph: Vec<String> = row
                    .iter()
                    .map(|_| {
                        n += 1;
                        self.placeholder(n)
                    })
                    .collect();
                values.push(format!("({})", ph.join(", ")));
            }
            let sql = format!("INSERT INTO audit_records ({RECORD_COLUMNS}) VALUES {}", values.join(", "));
            let binds: Vec<Bind> = chunk.iter().flatten().cloned().collect();
            bind_all(sqlx::query(&sql), &binds).execute(&mut *tx).await?;
        }
        if !stored.is_empty() {
            sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(&prev)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(AppendOutcome { accepted: stored.len(), duplicates: records.len() - stored.len(), stored })
    }

    /// Walks the chain in sequence order and reports the first altered, removed, inserted
    /// or reordered record, or a tail cut off after the last record.
    pub async fn verify_chain(&self) -> Result<VerifyReport, StoreError> {
        let total: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM audit_records").fetch_one(self.pool()).await?.try_get("n")?;
        let bad = |seq: i64, problem: String| VerifyReport {
            ok: false,
            records: total,
            first_bad_seq: Some(seq),
            problem: Some(problem),
        };
        let mut expected_seq: i64 = 1;
        let mut prev = GENESIS_HASH.to_string();
        let sql = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE seq >= $1 ORDER BY seq LIMIT $2");
        loop {
            let rows = sqlx::query(&sql).bind(expected_seq).bind(VERIFY_PAGE).fetch_all(self.pool()).await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let stored = match record_from_row(row) {
                    Ok(s) => s,
                    Err(e) => return Ok(bad(expected_seq, format!("record {expected_seq} is unreadable: {e}"))),
                };
                if stored.seq != expected_seq {
                    return Ok(bad(
                        expected_seq,
                        format!(
                            "record {expected_seq} is missing: the sequence jumps to {} (records removed)",
                            stored.seq
                        ),
                    ));
                }
                if stored.prev_hash != prev {
                    return Ok(bad(
                        stored.seq,
                        format!(
                            "record {} does not link to record {}: records were removed, inserted or reordered",
                            stored.seq,
                            stored.seq - 1
                        ),
                    ));
                }
                if record_hash(&stored.prev_hash, stored.seq, &stored.record) != stored.hash {
                    return Ok(bad(
                        stored.seq,
                        format!("record {} was altered: its content does not match its hash", stored.seq),
                    ));
                }
                prev = stored.hash;
                expected_seq += 1;
            }
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1").fetch_one(self.pool()).await?;
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: String = head.try_get("hash")?;
        let last_seq = expected_seq - 1;
        if head_seq != last_seq || head_hash != prev {
            let problem = if head_seq > last_seq {
                format!(
                    "the chain head records {head_seq} records but the log ends at {last_seq}: records removed \
                    from the end"
                )
            } else {
                format!(
                    "the chain head (record {head_seq}) does not match the last record {last_seq}: the log or its \
                    head was altered"
                )
            };
            return Ok(bad(last_seq + 1, problem));
        }
        Ok(VerifyReport { ok: true, records: total, first_bad_seq: None, problem: None })
    }
}
