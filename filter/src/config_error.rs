//! The one error type every part of plugin-config validation returns.
//!
//! A bad config must fail the plugin start with a message that names the exact field
//! and the problem, so an operator can fix it without reading our source.

use std::fmt;

/// A problem in the plugin configuration, located by a dotted/indexed field path such
/// as `rules[2].when.body[0].regex`.
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
            write!(f, "invalid Airlock plugin config: {}", self.problem)
        } else {
            write!(f, "invalid Airlock plugin config at `{}`: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}
