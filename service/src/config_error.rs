//! The error every part of the service config's validation returns, so each feature can
//! check its own section (`approvers`, `oidc`, `alerts`) and name the field at fault.

use std::fmt;

/// A problem in the service config file, located by field path (`approvers[1].groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { field: field.into(), problem: problem.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid Airlock service config: {}", self.problem)
        } else {
            write!(f, "invalid Airlock service config at `{}`: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}
