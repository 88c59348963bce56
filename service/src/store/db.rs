//! The connection pool, the error type and the helpers every part of the store shares.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyPool};

/// Which database the URL named; a few statements (locks, pragmas) differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL: expected `sqlite:///path/to/file.db` or `postgres://user@host/db`")]
    UnsupportedUrl,
    #[error("cannot open the database: {0}")]
    Connect(sqlx::Error),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database schema migration {version} failed: {source}")]
    Migrate { version: i64, source: sqlx::Error },
    #[error("stored data is unreadable ({0}); the database may have been edited by hand")]
    Corrupt(String),
}

/// A connection pool plus the backend it talks to.
pub struct Store {
    pub(super) pool: AnyPool,
    pub(super) backend: Backend,
    /// Serializes audit-chain appends inside this process; the chain-head row lock
    /// serializes them across replicas sharing one PostgreSQL database.
    pub(super) chain_lock: tokio::sync::Mutex<()>,
}

/// A value to bind to a `$N` placeholder of a statement built at run time.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    I64(i64),
    Text(String),
    OptText(Option<String>),
}

pub(crate) fn bind_all<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    binds: &'q [Bind],
) -> Query<'q, Any, AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::I64(v) => q.bind(*v),
            Bind::Text(v) => q.bind(v.as_str()),
            Bind::OptText(v) => q.bind(v.as_deref()),
        };
    }
    q
}

impl Store {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The placeholder for the `n`-th (1-based) parameter of a statement with many
    /// parameters. SQLite resolves a named parameter like `$7` by a linear scan, which
    /// makes binding thousands of them quadratic; anonymous `?` binds in order instead.
    pub(crate) fn placeholder(&self, n: usize) -> String {
        match self.backend {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${n}"),
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Parses a JSON array of strings kept in a TEXT column.
pub(crate) fn parse_string_list(column: &str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text)
        .map_err(|_| StoreError::Corrupt(format!("column `{column}` is not a JSON list of strings")))
}

pub(crate) fn string_list_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_string())
}
