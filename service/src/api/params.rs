//! Query parameters shared by several endpoints.

use crate::error::ApiError;

/// Parses an optional integer query parameter, naming it when malformed.
pub(crate) fn int_param(name: &str, value: Option<&String>) -> Result<Option<i64>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::invalid(name, "must be an integer")))
        .transpose()
}
