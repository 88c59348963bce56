//! Canonical forms of what a request asks for, so that policy rules match what the
//! upstream will act on rather than how the client chose to spell it.
//!
//! Two inputs are normalised:
//! - the HTTP target (`:path`): percent-encoding, dot segments, duplicate slashes and
//!   backslashes are the classic ways to walk around a path rule;
//! - SQL text: comments, whitespace and case are the classic ways to walk around a
//!   keyword rule such as `\bdrop\s+table\b`.
//!
//! Neither is a parser. Both err towards revealing *more* to the matcher: a deny rule
//! should see the dangerous form whatever spelling was used.
//!
//! One file per input: `target` (path and query) and `sql`. They share nothing, and this
//! module only re-exports what the policy and the request flow use.

mod sql;
mod target;

pub use sql::{normalize_sql, sql_readings};
pub use target::{normalize_target, RequestTarget, TargetError, TargetPart};
