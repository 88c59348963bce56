//! Query parameters shared by several endpoints.

use crate::error::ApiError;

/// Parses an optional integer query parameter, naming it when malformed.
pub(crate) fn int_param(name: &str, value: Option<&String>) -> Result<Option<i64>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::invalid(name, "must be an integer")))
        .transpose()
}

/// `limit=N` of a list endpoint: 100 by default, clamped to 1..=1000.
pub(crate) fn list_limit(value: Option<&String>) -> Result<i64, ApiError> {
    Ok(int_param("limit", value)?.unwrap_or(100).clamp(1, 1000))
}

/// `status=…` of a list endpoint: `None` (every status) when absent, empty or `all`;
/// otherwise what `parse` reads, or an error listing `choices`.
pub(crate) fn status_filter<T>(
    value: Option<&String>,
    parse: impl Fn(&str) -> Option<T>,
    choices: &str,
) -> Result<Option<T>, ApiError> {
    match value.map(String::as_str) {
        None | Some("") | Some("all") => Ok(None),
        Some(s) => parse(s).map(Some).ok_or_else(|| ApiError::invalid("status", format!("must be {choices} or all"))),
    }
}
