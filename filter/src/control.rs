//! Where the control service is (approvals, audit ingestion) and how the filter proves
//! who it is to it: a shared key sent as a bearer token, never logged.

use serde::Deserialize;

use crate::config_error::ConfigError;
use crate::credentials::{self, EnvLookup, Secret, SecretSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSpec {
    cluster: String,
    authority: String,
    filter_key: SecretSpec,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    2000
}

#[derive(Debug)]
pub struct Control {
    pub cluster: String,
    pub authority: String,
    /// `Bearer <filter key>`, built once.
    pub authorization: Secret,
    pub timeout_ms: u64,
}

pub fn compile(spec: ControlSpec, field: &str, env: EnvLookup) -> Result<Control, ConfigError> {
    if spec.cluster.is_empty() {
        return Err(ConfigError::new(format!("{field}.cluster"), "cluster name is empty"));
    }
    if spec.authority.is_empty() {
        return Err(ConfigError::new(format!("{field}.authority"), "authority is empty"));
    }
    if !(100..=60_000).contains(&spec.timeout_ms) {
        return Err(ConfigError::new(format!("{field}.timeout_ms"), "must be between 100 and 60000"));
    }
    let key = credentials::resolve(spec.filter_key, &format!("{field}.filter_key"), env)?;
    if key.expose().len() < 16 {
        return Err(ConfigError::new(
            format!("{field}.filter_key"),
            "must be at least 16 characters (the service refuses shorter keys)",
        ));
    }
    Ok(Control {
        cluster: spec.cluster,
        authority: spec.authority,
        authorization: Secret::new(format!("Bearer {}", key.expose())),
        timeout_ms: spec.timeout_ms,
    })
}
