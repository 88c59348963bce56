//! Client side of the `airlock` CLI: approvers and auditors talking to a running service.

pub mod client;
pub mod commands;
pub mod replay;

/// Errors of CLI commands; `main` prints them and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("AIRLOCK_TOKEN is not set: export your approver/auditor token")]
    NoToken,
    #[error("cannot reach {what}: {detail}")]
    Unreachable { what: String, detail: String },
    #[error("{status}: {message} ({code})")]
    Api { status: u16, code: String, message: String },
    #[error("unexpected answer from the server: {0}")]
    BadAnswer(String),
    #[error("invalid argument `{arg}`: {problem}")]
    BadArgument { arg: String, problem: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
