//! Keys and token minting for e2e tests, with the same library (jwt-simple, pure Rust)
//! the filter verifies with.
//!
//! RSA key generation is slow, so the RS256 and PS256 key material is generated once per
//! process and shared by every [`TestKeys`]; EC, EdDSA and HMAC keys are fresh for each
//! `TestKeys::new()`, and every set gets its own kids. Use a second `TestKeys` with EC or
//! EdDSA algorithms for key-rotation tests (two sets share their RSA material).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

/// Issuer of minted tokens unless [`TokenClaims::iss`] says otherwise (the demo IdP's too).
pub const DEFAULT_ISS: &str = airlock_demo::idp::DEFAULT_ISSUER;
/// Audience of minted tokens unless [`TokenClaims::aud`] says otherwise.
pub const DEFAULT_AUD: &str = airlock_demo::idp::DEFAULT_AUDIENCE;

/// Signature algorithms [`TestKeys`] can mint with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    PS256,
    ES256,
    ES384,
    EdDSA,
    HS256,
}

impl Alg {
    /// Every algorithm, for tests that loop over them.
    pub const ALL: [Alg; 6] = [Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::HS256];

    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
        }
    }
}

struct RsaMaterial {
    rs256: RS256KeyPair,
    ps256: PS256KeyPair,
}

fn rsa_material() -> &'static RsaMaterial {
    static RSA: OnceLock<RsaMaterial> = OnceLock::new();
    RSA.get_or_init(|| RsaMaterial {
        rs256: RS256KeyPair::generate(2048).expect("RSA key generation"),
        ps256: PS256KeyPair::generate(2048).expect("RSA key generation"),
    })
}

/// One signing key per [`Alg`], each with its own `kid`.
pub struct TestKeys {
    set: usize,
    rs256: RS256KeyPair,
    ps256: PS256KeyPair,
    es256: ES256KeyPair,
    es384: ES384KeyPair,
    eddsa: Ed25519KeyPair,
    hs256: HS256Key,
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl TestKeys {
    /// A new key set; kids are `<alg>-<n>` (e.g. `es256-1`) with `n` unique in the process.
    pub fn new() -> TestKeys {
        static SETS: AtomicUsize = AtomicUsize::new(1);
        let set = SETS.fetch_add(1, Ordering::Relaxed);
        let kid = |alg: Alg| format!("{}-{set}", alg.name().to_lowercase());
        let rsa = rsa_material();
        TestKeys {
            set,
            rs256: rsa.rs256.clone().with_key_id(&kid(Alg::RS256)),
            ps256: rsa.ps256.clone().with_key_id(&kid(Alg::PS256)),
            es256: ES256KeyPair::generate().with_key_id(&kid(Alg::ES256)),
            es384: ES384KeyPair::generate().with_key_id(&kid(Alg::ES384)),
            eddsa: Ed25519KeyPair::generate().with_key_id(&kid(Alg::EdDSA)),
            hs256: HS256Key::generate().with_key_id(&kid(Alg::HS256)),
        }
    }

    /// A process-wide key set, for tests that do not care which keys they use.
    pub fn shared() -> &'static TestKeys {
        static SHARED: OnceLock<TestKeys> = OnceLock::new();
        SHARED.get_or_init(TestKeys::new)
    }

    /// The `kid` of the key for `alg`.
    pub fn kid(&self, alg: Alg) -> String {
        format!("{}-{}", alg.name().to_lowercase(), self.set)
    }

    /// The HS256 shared secret (raw bytes), for an inline HMAC key in a plugin config.
    pub fn hs256_secret(&self) -> Vec<u8> {
        self.hs256.to_bytes()
    }

    /// The public JWK for `alg` (for HS256: an `oct` JWK holding the secret).
    pub fn jwk(&self, alg: Alg) -> Value {
        let text = match alg {
            Alg::RS256 => self.rs256.public_key().with_key_id(&self.kid(alg)).to_jwk(),
            Alg::PS256 => self.ps256.public_key().with_key_id(&self.kid(alg)).to_jwk(),
            Alg::ES256 => self.es256.public_key().with_key_id(&self.kid(alg)).to_jwk(),
            Alg::ES384 => self.es384.public_key().with_key_id(&self.kid(alg)).to_jwk(),
            Alg::EdDSA => self.eddsa.public_key().with_key_id(&self.kid(alg)).to_jwk(),
            Alg::HS256 => {
                return json!({
                    "kty": "oct",
                    "kid": self.kid(alg),
                    "alg": "HS256",
                    "use": "sig",
                    "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.hs256_secret()),
                })
            }
        };
        serde_json::from_str(&text).expect("jwt-simple exports valid JWK JSON")
    }

    /// `{"keys": [...]}` with the public keys of every asymmetric algorithm (no HS256:
    /// a JWKS publishes public keys only).
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = Alg::ALL.iter().filter(|a| **a != Alg::HS256).map(|a| self.jwk(*a)).collect();
        json!({ "keys": keys })
    }

    /// [`TestKeys::jwks`] as text, ready for [`crate::JwksServer::set_jwks`].
    pub fn jwks_json(&self) -> String {
        self.jwks().to_string()
    }

    /// A compact JWT signed with the key for `alg`.
    pub fn mint(&self, alg: Alg, claims: &TokenClaims) -> String {
        let claims = claims.to_jwt_claims(unix_now());
        match alg {
            Alg::RS256 => self.rs256.sign(claims),
            Alg::PS256 => self.ps256.sign(claims),
            Alg::ES256 => self.es256.sign(claims),
            Alg::ES384 => self.es384.sign(claims),
            Alg::EdDSA => self.eddsa.sign(claims),
            Alg::HS256 => self.hs256.authenticate(claims),
        }
        .expect("signing test claims")
    }
}

/// An unsigned token (`alg: none`, empty signature) carrying `claims`: filters must
/// reject it.
pub fn alg_none_token(claims: &TokenClaims) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims.to_json(unix_now())))
}

/// Seconds since the Unix epoch (test code only: the filter takes `now` as a parameter).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Clone, Debug)]
enum Aud {
    One(String),
    Many(Vec<String>),
}

/// Claims of a test token. Defaults: `sub` "alice", no groups, `iss` [`DEFAULT_ISS`],
/// `aud` [`DEFAULT_AUD`], `iat` and `nbf` now, `exp` in 10 minutes. Offsets are in
/// seconds relative to the time of minting and may be negative (an expired token is
/// `.exp_in(-60)`).
#[derive(Clone, Debug)]
pub struct TokenClaims {
    sub: Option<String>,
    groups: Option<Vec<String>>,
    iss: Option<String>,
    aud: Option<Aud>,
    exp_in: Option<i64>,
    nbf_in: Option<i64>,
    iat_in: Option<i64>,
    custom: Map<String, Value>,
}

impl Default for TokenClaims {
    fn default() -> Self {
        TokenClaims {
            sub: Some("alice".into()),
            groups: None,
            iss: Some(DEFAULT_ISS.into()),
            aud: Some(Aud::One(DEFAULT_AUD.into())),
            exp_in: Some(600),
            nbf_in: Some(0),
            iat_in: Some(0),
            custom: Map::new(),
        }
    }
}

impl TokenClaims {
    pub fn new() -> Self {
        Self::default()
    }
    /// The `sub` claim (named after it, hence not `std::ops::Sub`).
    #[allow(clippy::should_implement_trait)]
    pub fn sub(mut self, sub: &str) -> Self {
        self.sub = Some(sub.into());
        self
    }
    pub fn no_sub(mut self) -> Self {
        self.sub = None;
        self
    }
    /// The `groups` claim (an array of strings). For other claim names or nested
    /// layouts (`roles`, `realm_access.roles`) use [`TokenClaims::claim`].
    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.groups = Some(groups.iter().map(|g| g.to_string()).collect());
        self
    }
    pub fn iss(mut self, iss: &str) -> Self {
        self.iss = Some(iss.into());
        self
    }
    pub fn no_iss(mut self) -> Self {
        self.iss = None;
        self
    }
    /// A single audience, serialised as a string.
    pub fn aud(mut self, aud: &str) -> Self {
        self.aud = Some(Aud::One(aud.into()));
        self
    }
    /// Several audiences, serialised as an array.
    pub fn auds(mut self, auds: &[&str]) -> Self {
        self.aud = Some(Aud::Many(auds.iter().map(|a| a.to_string()).collect()));
        self
    }
    pub fn no_aud(mut self) -> Self {
        self.aud = None;
        self
    }
    pub fn exp_in(mut self, secs: i64) -> Self {
        self.exp_in = Some(secs);
        self
    }
    pub fn no_exp(mut self) -> Self {
        self.exp_in = None;
        self
    }
    pub fn nbf_in(mut self, secs: i64) -> Self {
        self.nbf_in = Some(secs);
        self
    }
    pub fn no_nbf(mut self) -> Self {
        self.nbf_in = None;
        self
    }
    pub fn iat_in(mut self, secs: i64) -> Self {
        self.iat_in = Some(secs);
        self
    }
    /// Any other top-level claim, e.g. `.claim("realm_access", json!({"roles": ["dba"]}))`.
    /// Do not use it for the registered claims above (the token would repeat the name).
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.custom.insert(name.into(), value);
        self
    }

    fn at(now: u64, offset: Option<i64>) -> Option<u64> {
        offset.map(|o| now.saturating_add_signed(o))
    }

    /// The payload as JSON, with times relative to `now`.
    pub fn to_json(&self, now: u64) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put("iss", self.iss.clone().map(Value::from));
        put("sub", self.sub.clone().map(Value::from));
        put(
            "aud",
            self.aud.clone().map(|a| match a {
                Aud::One(s) => Value::from(s),
                Aud::Many(v) => Value::from(v),
            }),
        );
        put("exp", Self::at(now, self.exp_in).map(Value::from));
        put("nbf", Self::at(now, self.nbf_in).map(Value::from));
        put("iat", Self::at(now, self.iat_in).map(Value::from));
        put("groups", self.groups.clone().map(Value::from));
        for (k, v) in &self.custom {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    fn to_jwt_claims(&self, now: u64) -> JWTClaims<Map<String, Value>> {
        let ts = |o: Option<i64>| Self::at(now, o).map(Duration::from_secs);
        let mut custom = self.custom.clone();
        if let Some(groups) = &self.groups {
            custom.insert("groups".into(), json!(groups));
        }
        JWTClaims {
            issued_at: ts(self.iat_in),
            expires_at: ts(self.exp_in),
            invalid_before: ts(self.nbf_in),
            issuer: self.iss.clone(),
            subject: self.sub.clone(),
            audiences: self.aud.clone().map(|a| match a {
                Aud::One(s) => Audiences::AsString(s),
                Aud::Many(v) => Audiences::AsSet(v.into_iter().collect::<HashSet<_>>()),
            }),
            jwt_id: None,
            nonce: None,
            custom,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(token: &str) -> Value {
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn header(token: &str) -> Value {
        let part = token.split('.').next().unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn every_algorithm_mints_a_token_its_published_key_verifies() {
        let keys = TestKeys::shared();
        let claims = TokenClaims::new().sub("bob").groups(&["dba", "support"]);
        let jwks = keys.jwks();
        for alg in Alg::ALL {
            let token = keys.mint(alg, &claims);
            assert_eq!(header(&token)["alg"], alg.name());
            assert_eq!(header(&token)["kid"], keys.kid(alg));
            let opts = VerificationOptions {
                allowed_issuers: Some(HashSet::from([DEFAULT_ISS.to_string()])),
                allowed_audiences: Some(HashSet::from([DEFAULT_AUD.to_string()])),
                ..Default::default()
            };
            let jwk = keys.jwk(alg).to_string();
            let verified = match alg {
                Alg::RS256 => {
                    RS256PublicKey::from_jwk(&jwk).unwrap().verify_token::<Map<String, Value>>(&token, Some(opts))
                }
                Alg::PS256 => {
                    PS256PublicKey::from_jwk(&jwk).unwrap().verify_token::<Map<String, Value>>(&token, Some(opts))
                }
                Alg::ES256 => {
                    ES256PublicKey::from_jwk(&jwk).unwrap().verify_token::<Map<String, Value>>(&token, Some(opts))
                }
                Alg::ES384 => {
                    ES384PublicKey::from_jwk(&jwk).unwrap().verify_token::<Map<String, Value>>(&token, Some(opts))
                }
                Alg::EdDSA => {
                    Ed25519PublicKey::from_jwk(&jwk).unwrap().verify_token::<Map<String, Value>>(&token, Some(opts))
                }
                Alg::HS256 => {
                    HS256Key::from_bytes(&keys.hs256_secret()).verify_token::<Map<String, Value>>(&token, Some(opts))
                }
            }
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(verified.subject.as_deref(), Some("bob"));
            assert_eq!(verified.custom["groups"], json!(["dba", "support"]));
            if alg != Alg::HS256 {
                assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == keys.kid(alg)));
            }
        }
        assert!(!jwks.to_string().contains("\"oct\""), "a JWKS must not publish the HMAC secret");
    }

    #[test]
    fn offsets_place_exp_and_nbf_relative_to_now_and_can_be_dropped() {
        let keys = TestKeys::shared();
        let before = unix_now();
        let p = payload(&keys.mint(
            Alg::ES256,
            &TokenClaims::new().exp_in(-60).nbf_in(120).claim("realm_access", json!({"roles": ["dba"]})),
        ));
        let exp = p["exp"].as_u64().unwrap();
        assert!(exp + 60 >= before && exp + 60 <= unix_now());
        assert!(p["nbf"].as_u64().unwrap() >= before + 120);
        assert_eq!(p["realm_access"]["roles"], json!(["dba"]));
        let p = payload(&keys.mint(Alg::EdDSA, &TokenClaims::new().no_exp().no_iss().auds(&["a", "b"])));
        assert!(p.get("exp").is_none() && p.get("iss").is_none());
        let mut auds: Vec<String> = serde_json::from_value(p["aud"].clone()).unwrap();
        auds.sort();
        assert_eq!(auds, ["a", "b"]);
    }

    #[test]
    fn key_sets_get_distinct_kids_and_distinct_ec_keys() {
        let a = TestKeys::new();
        let b = TestKeys::new();
        assert_ne!(a.kid(Alg::ES256), b.kid(Alg::ES256));
        assert_ne!(a.jwk(Alg::ES256)["x"], b.jwk(Alg::ES256)["x"]);
        let token = b.mint(Alg::ES256, &TokenClaims::new());
        let a_key = ES256PublicKey::from_jwk(&a.jwk(Alg::ES256).to_string()).unwrap();
        assert!(a_key.verify_token::<Map<String, Value>>(&token, None).is_err());
    }

    #[test]
    fn alg_none_token_has_no_signature() {
        let token = alg_none_token(&TokenClaims::new().sub("mallory"));
        assert!(token.ends_with('.'));
        assert_eq!(header(&token)["alg"], "none");
        assert_eq!(payload(&token)["sub"], "mallory");
    }
}
