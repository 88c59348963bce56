//! What a verified token must say (issuer, audience, validity window) and what Airlock
//! takes from it (subject, groups).
//!
//! Time is checked here, with the host's clock passed in, and not by jwt-simple (whose
//! own checks are switched off, see `verify.rs`): the same function then judges a fresh
//! token and a cached one, so both paths agree to the second.

use jwt_simple::prelude::Audiences;
use serde_json::{Map, Value};

use super::error::AuthError;
use super::jwks::Claims;
use crate::identity::Identity;

/// Registered claims jwt-simple takes out of the claim map (and types), so they cannot be
/// read as a custom subject or groups claim.
const TYPED_CLAIMS: [&str; 8] = ["iat", "exp", "nbf", "iss", "sub", "aud", "jti", "nonce"];

/// A claim name that may be a dotted path into nested objects (`realm_access.roles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    full: String,
    /// Empty when `full` has no dot.
    segments: Vec<String>,
}

impl ClaimPath {
    /// `Err` carries the problem for the caller to attach to its field.
    pub fn parse(name: &str) -> Result<ClaimPath, &'static str> {
        if name.is_empty() {
            return Err("must not be empty");
        }
        let segments: Vec<String> =
            if name.contains('.') { name.split('.').map(str::to_owned).collect() } else { Vec::new() };
        if segments.iter().any(String::is_empty) {
            return Err("has an empty segment between dots");
        }
        Ok(ClaimPath { full: name.to_owned(), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// True when the claim is one jwt-simple keeps out of the custom-claim map.
    pub(crate) fn is_typed_claim(&self) -> bool {
        TYPED_CLAIMS.contains(&self.full.as_str())
    }

    /// The claim's value. A top-level member whose name is the whole path wins over the
    /// nested walk, so namespaced claims such as `https://example.com/roles` (which
    /// contain dots) work as written.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(v) = claims.get(&self.full) {
            return Some(v);
        }
        let (first, rest) = self.segments.split_first()?;
        rest.iter().try_fold(claims.get(first)?, |node, segment| node.as_object()?.get(segment))
    }
}

/// The claim checks and extraction rules of one auth config.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) issuers: Vec<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) skew_secs: u64,
    pub(crate) subject: ClaimPath,
    pub(crate) groups: Option<ClaimPath>,
}

/// What the cache keeps besides the identity: enough to re-judge time on every hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) exp: u64,
    pub(crate) nbf: Option<u64>,
}

impl ClaimRules {
    /// Accepted while `now < exp + skew` (RFC 7519: exp is the first instant the token is
    /// no longer valid) and `now + skew >= nbf`.
    pub(crate) fn check_time(&self, validity: Validity, now: u64) -> Result<(), AuthError> {
        if validity.nbf.is_some_and(|nbf| now.saturating_add(self.skew_secs) < nbf) {
            return Err(AuthError::NotYetValid);
        }
        if now >= validity.exp.saturating_add(self.skew_secs) {
            return Err(AuthError::Expired);
        }
        Ok(())
    }

    /// Judges the claims of a token whose signature has been verified and builds the
    /// identity. Order: time, issuer, audience, subject; groups never fail.
    pub(crate) fn judge(&self, claims: &Claims, now: u64) -> Result<(Identity, Validity), AuthError> {
        let exp = claims.expires_at.ok_or(AuthError::MissingExpiry)?.as_secs();
        let validity = Validity { exp, nbf: claims.invalid_before.map(|t| t.as_secs()) };
        self.check_time(validity, now)?;

        let issuer = claims.issuer.as_deref().ok_or(AuthError::WrongIssuer)?;
        if !self.issuers.iter().any(|i| i == issuer) {
            return Err(AuthError::WrongIssuer);
        }
        let audience_ok = match &claims.audiences {
            None => false,
            Some(Audiences::AsString(aud)) => self.audiences.contains(aud),
            Some(Audiences::AsSet(set)) => self.audiences.iter().any(|a| set.contains(a)),
        };
        if !audience_ok {
            return Err(AuthError::WrongAudience);
        }

        let subject = self.subject_of(claims).ok_or(AuthError::MissingSubject)?;
        let groups =
            self.groups.as_ref().and_then(|path| path.lookup(&claims.custom)).map(groups_of).unwrap_or_default();
        Ok((Identity::new(subject, groups, exp), validity))
    }

    fn subject_of(&self, claims: &Claims) -> Option<String> {
        let value = match self.subject.as_str() {
            "sub" => claims.subject.clone(),
            "jti" => claims.jwt_id.clone(),
            _ => match self.subject.lookup(&claims.custom)? {
                Value::String(s) => Some(s.clone()),
                // Some providers use numeric user ids.
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            },
        }?;
        (!value.is_empty()).then_some(value)
    }
}

/// An array of strings (other elements ignored) or a space-separated string (OAuth `scope`
/// style). Anything else yields no groups: a groups claim of an unexpected shape must not
/// grant anything, and it is not worth refusing the caller over.
pub fn groups_of(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => {
            items.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn dotted_path_walks_nested_objects() {
        let claims = map(json!({"realm_access": {"roles": ["admin", "dev"]}}));
        let path = ClaimPath::parse("realm_access.roles").unwrap();
        assert_eq!(path.lookup(&claims), Some(&json!(["admin", "dev"])));
        assert_eq!(ClaimPath::parse("realm_access.nope").unwrap().lookup(&claims), None);
    }

    #[test]
    fn literal_member_with_dots_wins_over_nested_walk() {
        let claims = map(json!({"https://example.com/roles": ["ops"], "https://example": {"com/roles": ["x"]}}));
        let path = ClaimPath::parse("https://example.com/roles").unwrap();
        assert_eq!(path.lookup(&claims), Some(&json!(["ops"])));
    }

    #[test]
    fn claim_path_rejects_empty_segments() {
        assert!(ClaimPath::parse("").is_err());
        assert!(ClaimPath::parse("a..b").is_err());
        assert!(ClaimPath::parse(".a").is_err());
    }

    #[test]
    fn groups_accept_array_or_space_separated_string_only() {
        assert_eq!(groups_of(&json!(["a", 1, "b", ""])), vec!["a", "b"]);
        assert_eq!(groups_of(&json!("a  b\tc")), vec!["a", "b", "c"]);
        assert!(groups_of(&json!({"a": true})).is_empty());
    }

    #[test]
    fn time_window_boundaries_include_skew() {
        let rules = ClaimRules {
            issuers: vec![],
            audiences: vec![],
            skew_secs: 30,
            subject: ClaimPath::parse("sub").unwrap(),
            groups: None,
        };
        let now = 1_000_000;
        let v = |exp, nbf| Validity { exp, nbf };
        assert_eq!(rules.check_time(v(now - 29, None), now), Ok(()));
        assert_eq!(rules.check_time(v(now - 30, None), now), Err(AuthError::Expired));
        assert_eq!(rules.check_time(v(now + 60, Some(now + 30)), now), Ok(()));
        assert_eq!(rules.check_time(v(now + 60, Some(now + 31)), now), Err(AuthError::NotYetValid));
        // Saturating arithmetic: extreme values decide, they do not overflow.
        assert_eq!(rules.check_time(v(u64::MAX, Some(u64::MAX)), u64::MAX - 1), Ok(()));
        assert_eq!(rules.check_time(v(u64::MAX, None), u64::MAX), Err(AuthError::Expired));
    }
}
