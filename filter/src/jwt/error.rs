//! Why a token or a key set was refused.
//!
//! Messages say what is wrong and what to do, and never quote the token, its claims or
//! key material: they end up in logs and in replies to the (possibly hostile) caller.

use std::fmt;

/// Why a request's token was not accepted. Every variant answers 401 upstream of here;
/// `reason()` is the stable machine-readable code an agent loop or a dashboard keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token header, or it does not carry a `Bearer` token.
    MissingToken,
    /// Not a compact JWS: wrong segment count, bad base64url, bad JSON, oversized, or
    /// claims of the wrong type.
    MalformedToken,
    /// `alg` is `none`, unknown, or outside the configured allow-list.
    AlgorithmNotAllowed,
    /// The header has a `crit` member; Airlock understands no JWS extension.
    UnsupportedCriticalHeader,
    /// No key in the key set matches the token's `kid` (or, without `kid`, its `alg`).
    UnknownKey,
    /// The key named by `kid` is of another type than `alg` needs, or its JWK `alg`
    /// names a different algorithm: the algorithm-confusion case.
    KeyAlgorithmMismatch,
    /// No candidate key verified the signature.
    BadSignature,
    /// `exp` is in the past, beyond the allowed clock skew.
    Expired,
    /// `nbf` is in the future, beyond the allowed clock skew.
    NotYetValid,
    /// The token has no `exp`: tokens that never expire are refused.
    MissingExpiry,
    /// `iss` is missing or not one of the configured issuers.
    WrongIssuer,
    /// `aud` is missing or shares no value with the configured audiences.
    WrongAudience,
    /// The configured subject claim is missing or empty.
    MissingSubject,
    /// The key set is empty: the remote JWKS has not been fetched (yet).
    NoKeys,
}

impl AuthError {
    /// Stable snake_case code, e.g. `token_expired`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "token_missing",
            AuthError::MalformedToken => "token_malformed",
            AuthError::AlgorithmNotAllowed => "token_alg_not_allowed",
            AuthError::UnsupportedCriticalHeader => "token_crit_unsupported",
            AuthError::UnknownKey => "token_key_unknown",
            AuthError::KeyAlgorithmMismatch => "token_key_alg_mismatch",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::MissingExpiry => "token_exp_missing",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::MissingSubject => "token_subject_missing",
            AuthError::NoKeys => "jwks_unavailable",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::MissingToken => "no bearer token: send `Authorization: Bearer <JWT>`",
            AuthError::MalformedToken => {
                "the token is not a well-formed JWT (three base64url segments, JSON header \
                and claims, at most 16 KiB)"
            }
            AuthError::AlgorithmNotAllowed => "the token's signing algorithm is not accepted here",
            AuthError::UnsupportedCriticalHeader => {
                "the token declares critical header extensions (`crit`) that are \
                not supported"
            }
            AuthError::UnknownKey => {
                "the token was signed with a key this proxy does not know; get a fresh token \
                from your identity provider"
            }
            AuthError::KeyAlgorithmMismatch => "the token's algorithm does not match the type of the key it names",
            AuthError::BadSignature => "the token's signature does not verify",
            AuthError::Expired => "the token has expired; get a fresh one",
            AuthError::NotYetValid => "the token is not valid yet (`nbf` in the future); check the clocks",
            AuthError::MissingExpiry => "the token has no expiry (`exp`); tokens must expire",
            AuthError::WrongIssuer => "the token was not issued by a trusted issuer",
            AuthError::WrongAudience => "the token is not meant for this service (audience mismatch)",
            AuthError::MissingSubject => "the token does not name its subject",
            AuthError::NoKeys => "signing keys are not available yet; retry shortly",
        })
    }
}

impl std::error::Error for AuthError {}

/// Why a JWKS document, or one key in it, could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// The document is larger than the limit (checked before parsing).
    TooLarge { limit: usize },
    /// The document is not JSON.
    NotJson,
    /// The document is not an object with a `keys` array.
    MissingKeys,
    /// More keys than anyone needs: probably not a JWKS.
    TooManyKeys { limit: usize },
    /// One key is malformed. `member` is the JWK member at fault (`n`, `crv`, ...), or
    /// empty when the key as a whole is wrong.
    BadKey { index: usize, member: &'static str, problem: String },
    /// Parsing succeeded but no key is usable (all unsupported or malformed).
    NoUsableKey { skipped: usize },
}

impl JwksError {
    /// The location inside the JWKS document, e.g. `keys[1].n`; empty for the whole document.
    pub fn path(&self) -> String {
        match self {
            JwksError::BadKey { index, member: "", .. } => format!("keys[{index}]"),
            JwksError::BadKey { index, member, .. } => format!("keys[{index}].{member}"),
            JwksError::MissingKeys | JwksError::TooManyKeys { .. } | JwksError::NoUsableKey { .. } => "keys".into(),
            JwksError::TooLarge { .. } | JwksError::NotJson => String::new(),
        }
    }

    /// The problem alone, without the location.
    pub fn problem(&self) -> String {
        match self {
            JwksError::TooLarge { limit } => format!("the JWKS document is larger than {limit} bytes"),
            JwksError::NotJson => "the JWKS document is not valid JSON".into(),
            JwksError::MissingKeys => "a JWKS must be an object with a `keys` array".into(),
            JwksError::TooManyKeys { limit } => format!("a JWKS may hold at most {limit} keys"),
            JwksError::BadKey { problem, .. } => problem.clone(),
            JwksError::NoUsableKey { skipped: 0 } => "the JWKS holds no keys".into(),
            JwksError::NoUsableKey { skipped } => format!(
                "none of the {skipped} keys is usable: supported are RSA (2048-4096 bits), EC P-256/P-384, OKP \
                    Ed25519 and oct (>= 32 bytes) signing keys"
            ),
        }
    }
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path();
        if path.is_empty() {
            f.write_str(&self.problem())
        } else {
            write!(f, "JWKS `{path}`: {}", self.problem())
        }
    }
}

impl std::error::Error for JwksError {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_snake_case() {
        let all = [
            AuthError::MissingToken,
            AuthError::MalformedToken,
            AuthError::AlgorithmNotAllowed,
            AuthError::UnsupportedCriticalHeader,
            AuthError::UnknownKey,
            AuthError::KeyAlgorithmMismatch,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::MissingExpiry,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::MissingSubject,
            AuthError::NoKeys,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in all {
            let r = e.reason();
            assert!(r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{r}");
            assert!(seen.insert(r), "duplicate reason {r}");
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(AuthError::Expired.reason(), "token_expired");
    }

    #[test]
    fn jwks_error_path_names_key_and_member() {
        let e = JwksError::BadKey { index: 1, member: "n", problem: "is not base64url".into() };
        assert_eq!(e.path(), "keys[1].n");
        assert_eq!(e.to_string(), "JWKS `keys[1].n`: is not base64url");
        let whole = JwksError::BadKey { index: 0, member: "", problem: "must be an object".into() };
        assert_eq!(whole.path(), "keys[0]");
    }
}
