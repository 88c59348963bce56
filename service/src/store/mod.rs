//! Persistence on SQLite (default, one file) or PostgreSQL (several replicas), through
//! sqlx's `Any` driver so that one set of SQL statements and one schema serve both.
//! Statements use `$N` placeholders, which both SQLite and PostgreSQL accept, and only
//! `BIGINT` and `TEXT` columns, which both decode to the same Rust types.

mod db;
mod migrate;
mod open;

pub mod approvals;
pub mod audit;
pub mod sessions;
pub mod slack_messages;
pub mod tools;

pub use db::{Backend, Store, StoreError};
