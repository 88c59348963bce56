//! Persistence on SQLite (default, one file) or PostgreSQL (several replicas), through
//! sqlx's `Any` driver so that one set of SQL statements and one schema serve both.
//! Statements use `$N` placeholders, which both SQLite and PostgreSQL accept, and only
//! `BIGINT` and `TEXT` columns, which both decode to the same Rust types.

pub mod approvals;
pub mod audit;
mod migrate;
pub mod sessions;

use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Executor};

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
    pool: AnyPool,
    backend: Backend,
    /// Serializes audit-chain appends inside this process; the chain-head row lock
    /// serializes them across replicas sharing one PostgreSQL database.
    chain_lock: tokio::sync::Mutex<()>,
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

/// Maps the documented URL forms to what sqlx expects and names the backend. SQLite files
/// are created when missing (`mode=rwc`) so that a first start needs no manual step.
fn normalize_url(url: &str) -> Result<(String, Backend), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_string(), Backend::Postgres));
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(StoreError::UnsupportedUrl);
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest.is_empty() {
        return Err(StoreError::UnsupportedUrl);
    }
    let with_mode = if rest.contains("mode=") {
        rest.to_string()
    } else if rest.contains('?') {
        format!("{rest}&mode=rwc")
    } else {
        format!("{rest}?mode=rwc")
    };
    Ok((format!("sqlite://{with_mode}"), Backend::Sqlite))
}

impl Store {
    /// Connects, applies pending schema migrations and returns the ready store.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalize_url(url)?;
        // An in-memory SQLite database exists per connection: keep exactly one.
        let in_memory = backend == Backend::Sqlite && url.contains(":memory:");
        let max = match (backend, in_memory) {
            (_, true) => 1,
            (Backend::Sqlite, false) => 8,
            (Backend::Postgres, false) => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Writers queue for the file lock instead of failing at once.
                        conn.execute("PRAGMA busy_timeout = 15000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(StoreError::Connect)?;
        if backend == Backend::Sqlite && !in_memory {
            // WAL lets readers (verify, session listing) run while the chain is appended.
            pool.execute("PRAGMA journal_mode = WAL")
                .await
                .map_err(StoreError::Connect)?;
        }
        let store = Store {
            pool,
            backend,
            chain_lock: tokio::sync::Mutex::new(()),
        };
        migrate::run(&store).await?;
        Ok(store)
    }

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
    serde_json::from_str(text).map_err(|_| {
        StoreError::Corrupt(format!("column `{column}` is not a JSON list of strings"))
    })
}

pub(crate) fn string_list_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_gain_create_mode_and_keep_their_path() {
        let (u, b) = normalize_url("sqlite:///var/lib/airlock.db").unwrap();
        assert_eq!(u, "sqlite:///var/lib/airlock.db?mode=rwc");
        assert_eq!(b, Backend::Sqlite);
        let (u, _) = normalize_url("sqlite:rel.db").unwrap();
        assert_eq!(u, "sqlite://rel.db?mode=rwc");
        let (u, _) = normalize_url("sqlite:///x.db?mode=ro").unwrap();
        assert_eq!(u, "sqlite:///x.db?mode=ro");
    }

    #[test]
    fn postgres_urls_pass_through_and_others_are_refused() {
        assert_eq!(
            normalize_url("postgres://u@h/db").unwrap().1,
            Backend::Postgres
        );
        assert!(matches!(
            normalize_url("mysql://h/db"),
            Err(StoreError::UnsupportedUrl)
        ));
        assert!(matches!(
            normalize_url("sqlite:"),
            Err(StoreError::UnsupportedUrl)
        ));
    }
}
