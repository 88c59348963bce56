//! Token verification: cheap structural checks first, then key selection, one signature
//! check per candidate key, claim checks, and the cache in front of it all.
//!
//! Order matters for safety and cost: size, shape and header (`alg`, `crit`) are judged
//! before any key is touched, so `alg: none`, unknown algorithms and oversized tokens
//! cost no cryptography; the signature is checked before any claim is believed.

use std::rc::Rc;

use jwt_simple::prelude::{Duration, UnixTimeStamp, VerificationOptions};
use jwt_simple::JWTError;
use serde::Deserialize;

use super::alg::{Algorithm, AlgorithmSet};
use super::cache::TokenCache;
use super::claims::{ClaimRules, Validity};
use super::error::AuthError;
use super::jwks::KeySet;
use super::AuthConfig;
use crate::identity::Identity;

/// Tokens longer than this are refused unparsed. Real access tokens are 1-4 KiB; the
/// bound caps the hashing, decoding and JSON work a hostile caller can cause.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Without `kid`, at most this many keys (of the token's algorithm family) are tried, so
/// a large JWKS cannot multiply the signature work per forged token without bound.
pub const MAX_CANDIDATE_KEYS: usize = 8;

/// Extracts the token from an `Authorization`-style value: `Bearer <token>`, scheme
/// case-insensitive, surrounding blanks ignored.
pub fn bearer_token(header_value: &str) -> Result<&str, AuthError> {
    let blank = |c: char| c == ' ' || c == '\t';
    let value = header_value.trim_matches(blank);
    let (scheme, rest) = value.split_once(blank).ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = rest.trim_start_matches(blank);
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    // A token68 has no blanks or commas; anything else is a list or garbage. memchr:
    // `str::contains` with a char set walks a ~700-byte token char by char, once per
    // request (twice with `token_exchange`).
    if memchr::memchr3(b' ', b'\t', b',', token.as_bytes()).is_some() {
        return Err(AuthError::MalformedToken);
    }
    Ok(token)
}

/// Per-VM verifier: the claim rules of the config plus the cache of verified tokens.
pub struct Verifier {
    rules: ClaimRules,
    algorithms: AlgorithmSet,
    cache: TokenCache,
}

/// The JOSE header members looked at before any key work. Other members are ignored
/// here; jwt-simple re-reads the header (and checks `typ`) during verification.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Presence is all that matters: no extension is understood, so any `crit` refuses.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

impl Verifier {
    pub fn new(config: &AuthConfig) -> Verifier {
        Verifier {
            rules: config.rules.clone(),
            algorithms: config.algorithms,
            cache: TokenCache::new(config.cache_entries),
        }
    }

    /// Cache hit: no signature check, only the validity window against `now`. Miss: full
    /// verification against `keys`, then cached until `exp`.
    pub fn verify(&mut self, token: &str, keys: &KeySet, now_unix_secs: u64) -> Result<Rc<Identity>, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::MalformedToken);
        }
        if let Some((identity, validity)) = self.cache.get(token) {
            return match self.rules.check_time(validity, now_unix_secs) {
                Ok(()) => Ok(Rc::clone(identity)),
                Err(e) => {
                    if e == AuthError::Expired {
                        self.cache.remove(token);
                    }
                    Err(e)
                }
            };
        }
        let (identity, validity) = self.verify_uncached(token, keys, now_unix_secs)?;
        let identity = Rc::new(identity);
        let rules = &self.rules;
        self.cache.insert(token, Rc::clone(&identity), validity, |v| rules.check_time(v, now_unix_secs).is_ok());
        Ok(identity)
    }

    /// Forgets every verified token; call when the key set changes, so a token signed by
    /// a key that was removed stops working at once instead of at its expiry.
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// Number of cached tokens (for stats).
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    fn verify_uncached(&self, token: &str, keys: &KeySet, now: u64) -> Result<(Identity, Validity), AuthError> {
        let (header_b64, _payload_b64, signature_b64) = split_compact(token)?;
        let header = decode_header(header_b64)?;

        if header.alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let alg = Algorithm::from_name(&header.alg).ok_or(AuthError::AlgorithmNotAllowed)?;
        if !self.algorithms.contains(alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        if header.crit.is_some() {
            return Err(AuthError::UnsupportedCriticalHeader);
        }
        if signature_b64.is_empty() {
            return Err(AuthError::BadSignature);
        }
        if let Some(expected) = alg.fixed_signature_len() {
            // Unpadded base64 of n bytes has ceil(4n/3) characters; the inverse is exact.
            if signature_b64.len() * 3 / 4 != expected {
                return Err(AuthError::BadSignature);
            }
        }
        if keys.is_empty() {
            return Err(AuthError::NoKeys);
        }

        let kid = header.kid.as_deref();
        let mut kid_known = false;
        let mut tried = 0;
        for key in keys.named(kid) {
            kid_known |= kid.is_some() && key.kid() == kid;
            if !key.supports(alg) {
                continue;
            }
            if tried == MAX_CANDIDATE_KEYS {
                break;
            }
            tried += 1;
            match key.verify(alg, token, jwt_simple_options()) {
                Ok(claims) => return self.rules.judge(&claims, now),
                Err(e) => match e.downcast_ref::<JWTError>() {
                    // Wrong key (or forged token): try the next candidate.
                    Some(JWTError::InvalidSignature | JWTError::InvalidAuthenticationTag | JWTError::WeakKey) => {}
                    Some(JWTError::AlgorithmMismatch) => return Err(AuthError::AlgorithmNotAllowed),
                    Some(JWTError::UnknownCriticalExtension) => return Err(AuthError::UnsupportedCriticalHeader),
                    // Encoding errors, a non-JWT `typ`, claims of the wrong type.
                    _ => return Err(AuthError::MalformedToken),
                },
            }
        }
        if tried > 0 {
            Err(AuthError::BadSignature)
        } else if kid_known {
            Err(AuthError::KeyAlgorithmMismatch)
        } else {
            Err(AuthError::UnknownKey)
        }
    }
}

/// jwt-simple's own time checks are neutralised (time 0, no tolerance, future tokens
/// accepted): with those settings it never reads the clock and every `exp` passes, and
/// `ClaimRules::check_time` judges time with the host's clock instead. jwt-simple still
/// checks the signature, `alg` against the key type, `crit`, `typ` and the encodings.
fn jwt_simple_options() -> VerificationOptions {
    VerificationOptions {
        accept_future: true,
        artificial_time: Some(UnixTimeStamp::from_secs(0)),
        time_tolerance: Some(Duration::from_secs(0)),
        max_token_length: Some(MAX_TOKEN_BYTES),
        ..VerificationOptions::default()
    }
}

/// Splits a compact JWS into its three segments and checks they are non-empty (the
/// signature may be empty here, to report `alg: none` precisely) base64url text.
fn split_compact(token: &str) -> Result<(&str, &str, &str), AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::MalformedToken);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(AuthError::MalformedToken);
    }
    if ![header, payload, signature].iter().all(|s| is_base64url(s)) {
        return Err(AuthError::MalformedToken);
    }
    Ok((header, payload, signature))
}

/// Unpadded base64url: the URL-safe alphabet, and a length no encoding produces (4k+1)
/// excluded.
fn is_base64url(segment: &str) -> bool {
    segment.len() % 4 != 1 && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn decode_header(header_b64: &str) -> Result<Header, AuthError> {
    use base64::Engine as _;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| AuthError::MalformedToken)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::MalformedToken)
}
