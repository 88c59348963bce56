//! The signature algorithms Airlock accepts, and the allow-list an operator narrows them to.
//!
//! Names are matched exactly as RFC 7518 spells them: `rs256` is not `RS256`. The one
//! case-insensitive check is for `none`, which is refused in every spelling before any
//! other header field is looked at.

use std::fmt;

/// A JWS algorithm Airlock can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 12] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ];

    /// The exact `alg` name; `None` for anything Airlock does not verify.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
        }
    }

    /// Signature length in bytes for algorithms whose length does not depend on the key;
    /// checked before any key work so a truncated signature is rejected cheaply.
    pub(crate) fn fixed_signature_len(self) -> Option<usize> {
        match self {
            Algorithm::ES384 => Some(96),
            Algorithm::ES256 | Algorithm::EdDSA | Algorithm::HS512 => Some(64),
            Algorithm::HS384 => Some(48),
            Algorithm::HS256 => Some(32),
            _ => None,
        }
    }

    /// HS256/384/512: a shared secret, not a public key.
    pub fn is_hmac(self) -> bool {
        self.min_hmac_key_len().is_some()
    }

    /// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
    pub(crate) fn min_hmac_key_len(self) -> Option<usize> {
        match self {
            Algorithm::HS256 => Some(32),
            Algorithm::HS384 => Some(48),
            Algorithm::HS512 => Some(64),
            _ => None,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of algorithms as a bit mask: the allow-list check on the hot path is one AND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmSet(u16);

impl AlgorithmSet {
    pub fn all() -> AlgorithmSet {
        AlgorithmSet(Algorithm::ALL.iter().fold(0, |acc, a| acc | a.bit()))
    }

    pub fn empty() -> AlgorithmSet {
        AlgorithmSet(0)
    }

    pub fn insert(&mut self, alg: Algorithm) {
        self.0 |= alg.bit();
    }

    pub fn contains(self, alg: Algorithm) -> bool {
        self.0 & alg.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Algorithm::from_name("rs256"), None);
        assert_eq!(Algorithm::from_name("none"), None);
        assert_eq!(Algorithm::from_name("ES512"), None);
    }

    #[test]
    fn only_the_hs_family_is_hmac() {
        let hmac = Algorithm::ALL.into_iter().filter(|a| a.is_hmac());
        let names: Vec<&str> = hmac.map(Algorithm::name).collect();
        assert_eq!(names, ["HS256", "HS384", "HS512"]);
    }

    #[test]
    fn set_holds_exactly_what_was_inserted() {
        let mut set = AlgorithmSet::empty();
        assert!(set.is_empty());
        set.insert(Algorithm::ES256);
        assert!(set.contains(Algorithm::ES256));
        assert!(!set.contains(Algorithm::HS256));
        assert!(Algorithm::ALL.iter().all(|a| AlgorithmSet::all().contains(*a)));
    }
}
