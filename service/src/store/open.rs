//! Opening the store: connecting, per-backend settings, then the schema migrations.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

use super::db::{Backend, Store, StoreError};
use super::migrate;

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
            pool.execute("PRAGMA journal_mode = WAL").await.map_err(StoreError::Connect)?;
        }
        let store = Store { pool, backend, chain_lock: tokio::sync::Mutex::new(()) };
        migrate::run(&store).await?;
        Ok(store)
    }
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
        assert_eq!(normalize_url("postgres://u@h/db").unwrap().1, Backend::Postgres);
        assert!(matches!(normalize_url("mysql://h/db"), Err(StoreError::UnsupportedUrl)));
        assert!(matches!(normalize_url("sqlite:"), Err(StoreError::UnsupportedUrl)));
    }
}
