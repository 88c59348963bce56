//! Keys, JWKS documents and tokens for the tests. RSA keys are generated once per test
//! binary: generation takes a good fraction of a second even with optimised dependencies.

use std::sync::OnceLock;

use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

use super::{compile, AuthConfig, AuthSpec, KeySet, Verifier};

/// A fixed "now", far from the real clock on purpose: if anything read the real clock,
/// the tests would notice.
pub(crate) const NOW: u64 = 1_500_000_000;
pub(crate) const ISS: &str = "https://idp.example.com";
pub(crate) const AUD: &str = "airlock";

pub(crate) fn rsa_a() -> &'static RS256KeyPair {
    static KEY: OnceLock<RS256KeyPair> = OnceLock::new();
    KEY.get_or_init(|| RS256KeyPair::generate(2048).unwrap())
}

pub(crate) fn rsa_b() -> &'static RS256KeyPair {
    static KEY: OnceLock<RS256KeyPair> = OnceLock::new();
    KEY.get_or_init(|| RS256KeyPair::generate(2048).unwrap())
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn rsa_jwk(key: &RS256KeyPair, kid: &str) -> Value {
    let c = key.public_key().to_components();
    json!({"kty": "RSA", "kid": kid, "n": b64(&c.n), "e": b64(&c.e)})
}

pub(crate) fn es256_jwk(key: &ES256KeyPair, kid: &str) -> Value {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])})
}

pub(crate) fn es384_jwk(key: &ES384KeyPair, kid: &str) -> Value {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-384", "kid": kid, "x": b64(&point[1..49]), "y": b64(&point[49..97])})
}

pub(crate) fn ed25519_jwk(key: &Ed25519KeyPair, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&key.public_key().to_bytes())})
}

pub(crate) fn oct_jwk(secret: &[u8], kid: &str) -> Value {
    json!({"kty": "oct", "kid": kid, "k": b64(secret)})
}

pub(crate) fn key_set(keys: Vec<Value>) -> KeySet {
    KeySet::from_jwks_json(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
}

/// Valid claims at `NOW`, to be adjusted with `with`.
pub(crate) fn payload() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "agent-7", "iat": NOW, "exp": NOW + 600})
}

/// `base` with the members of `changes` set; a `null` change removes the member.
pub(crate) fn with(mut base: Value, changes: Value) -> Value {
    if let (Some(obj), Value::Object(changes)) = (base.as_object_mut(), changes) {
        for (k, v) in changes {
            if v.is_null() {
                obj.remove(&k);
            } else {
                obj.insert(k, v);
            }
        }
    }
    base
}

pub(crate) fn claims(payload: Value) -> JWTClaims<Map<String, Value>> {
    serde_json::from_value(payload).unwrap()
}

/// An `auth` spec with remote keys (so no inline JWKS is needed), adjusted by `changes`.
pub(crate) fn spec(changes: Value) -> AuthSpec {
    let base = json!({
        "issuers": [ISS],
        "audiences": [AUD],
        "jwks": {"remote": {"cluster": "idp", "authority": "idp.example.com", "path": "/jwks.json"}}
    });
    serde_json::from_value(with(base, changes)).unwrap()
}

pub(crate) fn config(changes: Value) -> AuthConfig {
    compile(spec(changes), "auth").unwrap()
}

pub(crate) fn verifier(changes: Value) -> Verifier {
    Verifier::new(&config(changes))
}

/// A compact JWS assembled by hand, for headers no library would produce.
pub(crate) fn hand_token(header: Value, payload: Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()));
    let signature = sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&signature))
}

pub(crate) fn hs256(secret: &[u8]) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
    move |input| hmac_sha256::HMAC::mac(input, secret).to_vec()
}
