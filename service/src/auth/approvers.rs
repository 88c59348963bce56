//! Caller authentication: the filter's shared key and approvers' bearer tokens.
//!
//! Both are compared as SHA-256 digests. For the filter key the comparison is constant
//! time, so response timing reveals nothing about how much of a guess was right. Approver
//! tokens are looked up by digest: the lookup key is itself a hash, so timing can at most
//! reveal bits of a digest, which does not help forge a token.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{ApproverEntry, Role};
use crate::error::ApiError;
use crate::oidc::OidcVerifier;

/// Shortest filter key accepted: shorter shared secrets are guessable.
pub const MIN_FILTER_KEY_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the filter key is empty: set --filter-key-file or AIRLOCK_FILTER_KEY")]
    Empty,
    #[error("the filter key is too short: use at least {MIN_FILTER_KEY_LEN} characters")]
    TooShort,
}

/// The digest of the shared secret the filter presents.
#[derive(Clone)]
pub struct FilterKey {
    digest: [u8; 32],
}

impl FilterKey {
    /// Surrounding whitespace is ignored: key files usually end with a newline.
    pub fn new(key: &str) -> Result<FilterKey, KeyError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() < MIN_FILTER_KEY_LEN {
            return Err(KeyError::TooShort);
        }
        Ok(FilterKey {
            digest: sha256(key.as_bytes()),
        })
    }

    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq(&self.digest, &sha256(presented.as_bytes()))
    }

    /// Succeeds when the request carries `authorization: Bearer <filter key>`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer(headers) {
            Some(token) if self.matches(token) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// An authenticated approver or auditor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub groups: Vec<String>,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether this principal belongs to any of `groups`.
    pub fn in_any(&self, groups: &[String]) -> bool {
        self.groups.iter().any(|g| groups.contains(g))
    }
}

/// Approver credentials: static tokens by SHA-256 digest, plus OIDC JWTs when configured.
#[derive(Default, Clone)]
pub struct Approvers {
    by_digest: HashMap<String, Arc<Principal>>,
    oidc: Option<Arc<OidcVerifier>>,
}

impl Approvers {
    pub fn from_config(entries: &[ApproverEntry]) -> Approvers {
        let by_digest = entries
            .iter()
            .map(|e| {
                let p = Principal {
                    name: e.name.clone(),
                    groups: e.groups.clone(),
                    roles: e.roles.clone(),
                };
                (e.token_sha256.to_ascii_lowercase(), Arc::new(p))
            })
            .collect();
        Approvers {
            by_digest,
            oidc: None,
        }
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
        self.by_digest
            .get(&hash_token(token))
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }

    /// The principal for the request's bearer token, if it has `role`.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        role: Role,
    ) -> Result<Arc<Principal>, ApiError> {
        let token = bearer(headers).ok_or(ApiError::Unauthorized)?;
        let principal = self.principal(token)?;
        if !principal.has_role(role) {
            let role_name = match role {
                Role::Approver => "approver",
                Role::Auditor => "auditor",
            };
            return Err(ApiError::Forbidden {
                code: "missing_role",
                message: format!(
                    "`{}` lacks the `{role_name}` role needed here",
                    principal.name
                ),
            });
        }
        Ok(principal)
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// Lowercase hex SHA-256 of a token, the form approver tokens take in the config file.
pub fn hash_token(token: &str) -> String {
    hex::encode(sha256(token.trim().as_bytes()))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

/// The token of an `authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn filter_key_accepts_only_the_exact_key() {
        let k = FilterKey::new("0123456789abcdef-key\n").unwrap();
        assert!(k.check(&headers("Bearer 0123456789abcdef-key")).is_ok());
        assert!(k.check(&headers("bearer 0123456789abcdef-key")).is_ok());
        assert!(k.check(&headers("Bearer 0123456789abcdef-ke")).is_err());
        assert!(k.check(&headers("Basic 0123456789abcdef-key")).is_err());
        assert!(k.check(&HeaderMap::new()).is_err());
    }

    #[test]
    fn short_or_empty_filter_keys_are_refused() {
        assert_eq!(FilterKey::new("  \n").err(), Some(KeyError::Empty));
        assert_eq!(FilterKey::new("short").err(), Some(KeyError::TooShort));
    }

    #[test]
    fn approver_token_resolves_to_its_principal_and_role_is_enforced() {
        let entries = vec![ApproverEntry {
            name: "alice".into(),
            token_sha256: hash_token("alice-token"),
            groups: vec!["dba".into()],
            roles: vec![Role::Approver],
        }];
        let a = Approvers::from_config(&entries);
        let p = a
            .authenticate(&headers("Bearer alice-token"), Role::Approver)
            .unwrap();
        assert_eq!(p.name, "alice");
        assert!(p.in_any(&["ops".into(), "dba".into()]));
        assert!(matches!(
            a.authenticate(&headers("Bearer alice-token"), Role::Auditor),
            Err(ApiError::Forbidden { .. })
        ));
        assert!(matches!(
            a.authenticate(&headers("Bearer bob-token"), Role::Approver),
            Err(ApiError::Unauthorized)
        ));
    }

    #[test]
    fn constant_time_eq_compares_every_byte() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] = 8;
        assert!(!constant_time_eq(&a, &b));
    }
}
