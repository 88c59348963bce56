//! Approvers' and auditors' credentials: static bearer tokens from the config file, looked
//! up by SHA-256 digest, plus OIDC JWTs when configured.
//!
//! The lookup key is itself a hash, so timing can at most reveal bits of a digest, which
//! does not help forge a token.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::bearer::bearer;
use super::oidc::OidcVerifier;
use super::principal::{Principal, Role};
use crate::config_error::ConfigError;
use crate::error::ApiError;

fn default_roles() -> Vec<Role> {
    vec![Role::Approver]
}

/// One `[[approvers]]` entry of the service config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverEntry {
    pub name: String,
    /// Lowercase hex SHA-256 of the bearer token (`airlock hash-token` prints it), so the
    /// config file never holds a usable credential.
    pub token_sha256: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    /// The approver's Slack member ID (`U…`), so their clicks on Slack buttons count as
    /// their decisions.
    #[serde(default)]
    pub slack_user_id: Option<String>,
}

/// Checks the `approvers` list of the config (and lower-cases the digests).
pub fn validate_approvers(entries: &mut [ApproverEntry]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut hashes = HashSet::new();
    let mut slack_ids = HashSet::new();
    for (i, a) in entries.iter_mut().enumerate() {
        let field = format!("approvers[{i}]");
        if a.name.trim().is_empty() {
            return Err(ConfigError::new(format!("{field}.name"), "must not be empty"));
        }
        if !names.insert(a.name.clone()) {
            return Err(ConfigError::new(format!("{field}.name"), format!("approver `{}` is listed twice", a.name)));
        }
        a.token_sha256 = a.token_sha256.to_ascii_lowercase();
        if a.token_sha256.len() != 64 || !a.token_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::new(
                format!("{field}.token_sha256"),
                "must be 64 hex digits: the SHA-256 of the token (`airlock hash-token` prints it)",
            ));
        }
        if !hashes.insert(a.token_sha256.clone()) {
            return Err(ConfigError::new(
                format!("{field}.token_sha256"),
                "the same token is configured for two approvers",
            ));
        }
        if let Some(id) = &a.slack_user_id {
            if id.trim().is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ConfigError::new(
                    format!("{field}.slack_user_id"),
                    "must be a Slack member ID such as U0123ABCD (profile → Copy member ID)",
                ));
            }
            if !slack_ids.insert(id.clone()) {
                return Err(ConfigError::new(
                    format!("{field}.slack_user_id"),
                    "the same Slack user is configured for two approvers",
                ));
            }
        }
        if a.roles.is_empty() {
            return Err(ConfigError::new(format!("{field}.roles"), "list at least one of `approver`, `auditor`"));
        }
    }
    Ok(())
}

/// Approver credentials: static tokens by SHA-256 digest, plus OIDC JWTs when configured.
#[derive(Default, Clone)]
pub struct Approvers {
    by_digest: HashMap<String, Arc<Principal>>,
    by_slack_user: HashMap<String, Arc<Principal>>,
    oidc: Option<Arc<OidcVerifier>>,
}

impl Approvers {
    pub fn from_config(entries: &[ApproverEntry]) -> Approvers {
        let mut by_digest = HashMap::new();
        let mut by_slack_user = HashMap::new();
        for e in entries {
            let p = Arc::new(Principal { name: e.name.clone(), groups: e.groups.clone(), roles: e.roles.clone() });
            if let Some(id) = &e.slack_user_id {
                by_slack_user.insert(id.clone(), Arc::clone(&p));
            }
            by_digest.insert(e.token_sha256.to_ascii_lowercase(), p);
        }
        Approvers { by_digest, by_slack_user, oidc: None }
    }

    /// Also accepts JWTs verified by `oidc`.
    pub fn with_oidc(mut self, oidc: Arc<OidcVerifier>) -> Approvers {
        self.oidc = Some(oidc);
        self
    }

    fn principal(&self, token: &str) -> Result<Arc<Principal>, ApiError> {
        // A JWT has exactly two dots; static tokens are looked up by digest.
        if let (Some(oidc), 2) = (&self.oidc, token.bytes().filter(|&b| b == b'.').count()) {
            return oidc.verify(token).map(Arc::new).map_err(|e| {
                tracing::info!(reason = %e, "approver JWT refused");
                ApiError::Unauthorized
            });
        }
        self.by_digest.get(&hash_token(token)).cloned().ok_or(ApiError::Unauthorized)
    }

    /// The principal for the request's bearer token, if it has `role`.
    pub fn authenticate(&self, headers: &HeaderMap, role: Role) -> Result<Arc<Principal>, ApiError> {
        let token = bearer(headers).ok_or(ApiError::Unauthorized)?;
        require_role(self.principal(token)?, role)
    }

    /// The approver whose `slack_user_id` is `id`, if any.
    pub fn by_slack_user(&self, id: &str) -> Option<Arc<Principal>> {
        self.by_slack_user.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// `principal`, if it has `role` (`403 missing_role` otherwise).
pub fn require_role(principal: Arc<Principal>, role: Role) -> Result<Arc<Principal>, ApiError> {
    if !principal.has_role(role) {
        return Err(ApiError::Forbidden {
            code: "missing_role",
            message: format!("`{}` lacks the `{}` role needed here", principal.name, role.as_str()),
        });
    }
    Ok(principal)
}

/// Lowercase hex SHA-256 of a token, the form approver tokens take in the config file.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::bearer::authorization as headers;

    #[test]
    fn approver_token_resolves_to_its_principal_and_role_is_enforced() {
        let entries = vec![ApproverEntry {
            name: "alice".into(),
            token_sha256: hash_token("alice-token"),
            groups: vec!["dba".into()],
            roles: vec![Role::Approver],
            slack_user_id: Some("U0ALICE".into()),
        }];
        let a = Approvers::from_config(&entries);
        let p = a.authenticate(&headers("Bearer alice-token"), Role::Approver).unwrap();
        assert_eq!(p.name, "alice");
        assert_eq!(a.by_slack_user("U0ALICE").unwrap().name, "alice");
        assert!(a.by_slack_user("U0BOB").is_none());
        assert!(p.in_any(&["ops".into(), "dba".into()]));
        assert!(matches!(
            a.authenticate(&headers("Bearer alice-token"), Role::Auditor),
            Err(ApiError::Forbidden { .. })
        ));
        assert!(matches!(a.authenticate(&headers("Bearer bob-token"), Role::Approver), Err(ApiError::Unauthorized)));
    }
}
