//! Schema migrations, applied in order at start. Each version runs in one transaction and
//! is recorded in `airlock_schema`; on PostgreSQL an advisory lock keeps two replicas that
//! start together from migrating at once. The same statements run on both backends.

use sqlx::{Executor, Row};

use super::db::{Backend, Store, StoreError};
use crate::chain::GENESIS_HASH;

/// Arbitrary constant naming Airlock's migration lock among PostgreSQL advisory locks.
const MIGRATION_LOCK_KEY: i64 = 0x4149_524c_4f43_4b01;

const V1: &[&str] = &[
    "CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        subject TEXT NOT NULL,
        groups_json TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        body TEXT NOT NULL,
        digest TEXT NOT NULL,
        reason TEXT,
        session_id TEXT NOT NULL,
        mode TEXT NOT NULL,
        approver_groups_json TEXT NOT NULL,
        required BIGINT NOT NULL,
        status TEXT NOT NULL,
        used BIGINT NOT NULL DEFAULT 0,
        used_ms BIGINT,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL,
        decided_ms BIGINT,
        version BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE INDEX approvals_by_status ON approvals (status, created_ms)",
    "CREATE TABLE approval_decisions (
        approval_id TEXT NOT NULL REFERENCES approvals (id),
        approver TEXT NOT NULL,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        PRIMARY KEY (approval_id, approver)
    )",
    "CREATE TABLE audit_records (
        seq BIGINT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        time_ms BIGINT NOT NULL,
        subject TEXT NOT NULL,
        groups_json TEXT NOT NULL,
        session_id TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        request_body TEXT,
        status BIGINT NOT NULL,
        response_body TEXT,
        decision TEXT NOT NULL,
        rule TEXT,
        approval_id TEXT,
        latency_ms BIGINT NOT NULL,
        reason TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        received_ms BIGINT NOT NULL
    )",
    "CREATE INDEX audit_by_session ON audit_records (session_id, seq)",
    "CREATE INDEX audit_by_subject ON audit_records (subject, time_ms)",
    "CREATE INDEX audit_by_time ON audit_records (time_ms)",
    // One row: the last sequence number and hash. Appenders lock it, which serializes
    // chain writes across replicas, and verification compares it with the last record
    // so that removing records from the end is detected.
    "CREATE TABLE audit_chain_head (
        id BIGINT PRIMARY KEY,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    )",
];

/// MCP tool-definition pins, trusted on first use, and the changes filters observed.
const V2: &[&str] = &[
    "CREATE TABLE tool_pins (
        upstream TEXT NOT NULL,
        tool TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        pinned_ms BIGINT NOT NULL,
        PRIMARY KEY (upstream, tool)
    )",
    "CREATE TABLE tool_changes (
        id TEXT PRIMARY KEY,
        upstream TEXT NOT NULL,
        tool TEXT NOT NULL,
        old_fingerprint TEXT NOT NULL,
        new_fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        observed_ms BIGINT NOT NULL,
        accepted_by TEXT,
        decided_ms BIGINT
    )",
    // At most one pending change per tool: two filters (or replicas) reporting the same
    // change at once record it once.
    "CREATE UNIQUE INDEX tool_changes_one_pending ON tool_changes (upstream, tool) WHERE status = 'pending'",
    "CREATE INDEX tool_changes_by_status ON tool_changes (status, observed_ms)",
];

/// The credential a request's upstream got (kind and key id, as JSON; never a value).
/// Records stored before have none, which keeps their chain hashes.
const V3: &[&str] = &["ALTER TABLE audit_records ADD COLUMN credential_json TEXT"];

/// Where the Slack bot posted each approval's message, so it can be rewritten on every
/// decision and on expiry; `closed` once its final state was posted.
const V4: &[&str] = &["CREATE TABLE slack_messages (
        approval_id TEXT PRIMARY KEY REFERENCES approvals (id),
        channel TEXT NOT NULL,
        ts TEXT NOT NULL,
        closed BIGINT NOT NULL DEFAULT 0
    )"];

const MIGRATIONS: &[(i64, &[&str])] = &[(1, V1), (2, V2), (3, V3), (4, V4)];

pub(super) async fn run(store: &Store) -> Result<(), StoreError> {
    let fail = |version: i64| move |source| StoreError::Migrate { version, source };
    // One transaction for everything: PostgreSQL and SQLite both run DDL transactionally,
    // so a failed start leaves the schema as it was.
    let mut tx = store.pool().begin().await.map_err(fail(0))?;
    if store.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(fail(0))?;
    }
    tx.execute("CREATE TABLE IF NOT EXISTS airlock_schema (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)")
        .await
        .map_err(fail(0))?;
    for (version, statements) in MIGRATIONS {
        let version = *version;
        let done = sqlx::query("SELECT COUNT(*) AS n FROM airlock_schema WHERE version = $1")
            .bind(version)
            .fetch_one(&mut *tx)
            .await
            .map_err(fail(version))?
            .try_get::<i64, _>("n")
            .map_err(fail(version))?;
        if done > 0 {
            continue;
        }
        for statement in *statements {
            tx.execute(*statement).await.map_err(fail(version))?;
        }
        if version == 1 {
            sqlx::query("INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, $1)")
                .bind(GENESIS_HASH)
                .execute(&mut *tx)
                .await
                .map_err(fail(version))?;
        }
        sqlx::query("INSERT INTO airlock_schema (version, applied_ms) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::time::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(fail(version))?;
        tracing::info!(version, "applied schema migration");
    }
    tx.commit().await.map_err(fail(0))?;
    Ok(())
}
