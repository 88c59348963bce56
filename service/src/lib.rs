//! Airlock control service: the approval API the filter calls, the approver and auditor
//! APIs (plus a small web console), the hash-chained audit store, alert delivery, and
//! the client side of the `airlock` CLI. `main.rs` only parses the command line.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod chain;
pub mod cli;
pub mod config;
pub mod config_error;
pub mod credentials;
pub mod error;
pub mod ids;
pub mod replay;
pub mod server;
pub mod slack;
pub mod slack_bot;
pub mod store;
pub mod time;
pub mod validate;
pub mod waiters;
