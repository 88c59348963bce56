//! The shared secret the filter presents as a bearer token.
//!
//! Compared as SHA-256 digests in constant time, so response timing reveals nothing about
//! how much of a guess was right.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use super::bearer::bearer;
use crate::error::ApiError;

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
        Ok(FilterKey { digest: sha256(key.as_bytes()) })
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

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::bearer::authorization as headers;

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
    fn constant_time_eq_compares_every_byte() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] = 8;
        assert!(!constant_time_eq(&a, &b));
    }
}
