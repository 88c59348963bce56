//! `signed_request` credentials: a short-lived JWT minted for each request, naming the
//! agent it acts for and bound to that one request, so a copy is worthless for any other
//! call and after `lifetime_s`.
//!
//! # The token
//! Header `{"alg":"ES256"|"EdDSA","typ":"JWT","kid":<key_id>}`; claims
//!
//! | claim | value |
//! |---|---|
//! | `iss` | `issuer` (the proxy) |
//! | `aud` | `audience` (the upstream) |
//! | `sub` | the agent's verified subject |
//! | `act` | `{"sub": issuer}`: the proxy acts for `sub` (RFC 8693 §4.1) |
//! | `groups` | the agent's verified groups |
//! | `iat`, `exp` | issue time and `iat + lifetime_s` (≤ 60 s) |
//! | `jti` | the request id (`x-request-id`) |
//! | `req_sha256` | the request binding, below |
//!
//! # The request binding
//! `req_sha256` = base64url without padding of SHA-256 over
//! `METHOD "\n" PATH "\n" BODY`: the `:method` and `:path` (with its query, exactly as the
//! upstream receives them from the filter) and the body's raw bytes (nothing for a request
//! without one). HTTP allows no line break in a method or a path, so the input splits one
//! way only. An upstream recomputes it from what it received and refuses a mismatch.
//!
//! Keys are PKCS#8 PEM, parsed once at load; signing is pure Rust (`p256`'s ECDSA with
//! RFC 6979 nonces, `ed25519-compact`), so it needs no randomness per request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Secret;

/// The algorithms a `signed_request` credential signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    ES256,
    EdDSA,
}

impl SigningAlg {
    pub fn named(name: &str) -> Option<SigningAlg> {
        [SigningAlg::ES256, SigningAlg::EdDSA].into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::ES256 => "ES256",
            SigningAlg::EdDSA => "EdDSA",
        }
    }

    fn key_kind(self) -> &'static str {
        match self {
            SigningAlg::ES256 => "a P-256 (prime256v1) key",
            SigningAlg::EdDSA => "an Ed25519 key",
        }
    }
}

enum SigningKey {
    Es256(Box<p256::ecdsa::SigningKey>),
    EdDsa(Box<ed25519_compact::KeyPair>),
}

/// The private key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). The error never
/// quotes the text: it is a private key.
fn parse_private_key(alg: SigningAlg, pem: &str) -> Result<SigningKey, String> {
    let parsed = match alg {
        SigningAlg::ES256 => {
            p256::ecdsa::SigningKey::from_pkcs8_pem(pem.trim()).map(|k| SigningKey::Es256(Box::new(k))).ok()
        }
        SigningAlg::EdDSA => {
            ed25519_compact::KeyPair::from_pem(pem.trim()).map(|k| SigningKey::EdDsa(Box::new(k))).ok()
        }
    };
    parsed.ok_or_else(|| {
        format!(
            "not a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`) holding {} for {}; convert an \
             `EC PRIVATE KEY` with `openssl pkcs8 -topk8 -nocrypt`",
            alg.key_kind(),
            alg.name()
        )
    })
}

/// A signing key, its id and what every token it mints says.
pub struct RequestSigner {
    key: SigningKey,
    key_id: String,
    issuer: String,
    audience: String,
    lifetime_s: u64,
    /// `base64url(header JSON) "."`: the same for every token, so made once.
    header_prefix: String,
}

/// What one request's token says about it.
pub struct RequestFacts<'a> {
    pub subject: &'a str,
    pub groups: &'a [String],
    pub jti: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
    pub now_s: u64,
}

#[derive(Serialize)]
struct Actor<'a> {
    sub: &'a str,
}

/// Declaration order is the order the claims are written in.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    act: Actor<'a>,
    groups: &'a [String],
    iat: u64,
    exp: u64,
    jti: &'a str,
    req_sha256: &'a str,
}

/// `req_sha256` of a request (see the module documentation).
pub fn request_binding(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = hmac_sha256::Hash::new();
    hash.update(method.as_bytes());
    hash.update(b"\n");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

impl RequestSigner {
    /// `Err` is the problem with `pem`, for the caller to put at the key's field.
    pub fn new(
        alg: SigningAlg,
        pem: &Secret,
        key_id: String,
        issuer: String,
        audience: String,
        lifetime_s: u64,
    ) -> Result<RequestSigner, String> {
        let key = parse_private_key(alg, pem.expose())?;
        let header = json!({"alg": alg.name(), "typ": "JWT", "kid": key_id});
        let header_prefix = format!("{}.", URL_SAFE_NO_PAD.encode(header.to_string()));
        Ok(RequestSigner { key, key_id, issuer, audience, lifetime_s, header_prefix })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The compact JWT for one request.
    pub fn mint(&self, facts: &RequestFacts) -> Secret {
        let binding = request_binding(facts.method, facts.path, facts.body);
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: facts.subject,
            act: Actor { sub: &self.issuer },
            groups: facts.groups,
            iat: facts.now_s,
            exp: facts.now_s + self.lifetime_s,
            jti: facts.jti,
            req_sha256: &binding,
        };
        // Strings and integers only: serialising cannot fail.
        self.sign(&serde_json::to_vec(&claims).unwrap_or_default())
    }

    /// An RFC 7523 client assertion (`private_key_jwt`): `iss` = `sub` = the client id
    /// (this signer's issuer), `aud` = the token endpoint (its audience), a fresh `jti`.
    pub fn mint_assertion(&self, jti: &str, now_s: u64) -> Secret {
        let claims = json!({"iss": self.issuer, "sub": self.issuer, "aud": self.audience, "iat": now_s,
                            "exp": now_s + self.lifetime_s, "jti": jti});
        self.sign(claims.to_string().as_bytes())
    }

    /// The compact JWT of `payload` (claims JSON) under this key's header.
    fn sign(&self, payload: &[u8]) -> Secret {
        let mut token = String::with_capacity(self.header_prefix.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.header_prefix);
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature: Vec<u8> = match &self.key {
            SigningKey::Es256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(token.as_bytes());
                signature.to_bytes().to_vec()
            }
            SigningKey::EdDsa(pair) => pair.sk.sign(token.as_bytes(), None).to_vec(),
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Secret::new(token)
    }

    /// This key's public half as a JWK, as the control service publishes it.
    pub fn public_jwk(&self) -> Value {
        match &self.key {
            SigningKey::Es256(key) => ec_jwk(key.verifying_key(), &self.key_id),
            SigningKey::EdDsa(pair) => okp_jwk(&pair.pk, &self.key_id),
        }
    }
}

fn ec_jwk(key: &p256::ecdsa::VerifyingKey, kid: &str) -> Value {
    let point = key.to_sec1_point(false);
    // Uncompressed SEC1: 0x04, then x and y, 32 bytes each.
    let bytes = point.as_bytes();
    let (x, y) = bytes.get(1..).unwrap_or_default().split_at(bytes.len().saturating_sub(1) / 2);
    json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y), "kid": kid,
           "alg": SigningAlg::ES256.name(), "use": "sig"})
}

fn okp_jwk(key: &ed25519_compact::PublicKey, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(key.as_ref()), "kid": kid,
           "alg": SigningAlg::EdDSA.name(), "use": "sig"})
}

/// The public JWK of `pem`, a PKCS#8 private key (only its public half is kept) or an
/// SPKI public key (`-----BEGIN PUBLIC KEY-----`): what the control service publishes
/// for a key the filter signs with. The error never quotes the text.
pub fn public_jwk_from_pem(alg: SigningAlg, kid: &str, pem: &str) -> Result<Value, String> {
    let pem = pem.trim();
    if pem.contains("PRIVATE KEY") {
        let key = parse_private_key(alg, pem)?;
        return Ok(match &key {
            SigningKey::Es256(key) => ec_jwk(key.verifying_key(), kid),
            SigningKey::EdDsa(pair) => okp_jwk(&pair.pk, kid),
        });
    }
    let jwk = match alg {
        SigningAlg::ES256 => p256::ecdsa::VerifyingKey::from_public_key_pem(pem).ok().map(|k| ec_jwk(&k, kid)),
        SigningAlg::EdDSA => ed25519_compact::PublicKey::from_pem(pem).ok().map(|k| okp_jwk(&k, kid)),
    };
    jwk.ok_or_else(|| {
        format!(
            "neither a PKCS#8 PEM private key nor a PEM public key (`-----BEGIN PUBLIC KEY-----`) holding {} \
             for {}",
            alg.key_kind(),
            alg.name()
        )
    })
}

/// Keys for tests only: their private halves are in this file.
#[cfg(test)]
pub(crate) mod test_keys {
    /// Generated with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
    pub(crate) const ES256_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSKLxaGiQ9Ihhuark
3BIqCm0EXW2vqwUIFrOQ58TRwI6hRANCAASmcwjXQL/ua6YimrCY9oEs3cHkcKlK
Xmal/ZcG9Xu3LtV18R+katFnlo+N4Tfdr4Xpzh63kFSrQ4Nr/zirdjcg
-----END PRIVATE KEY-----";

    /// Generated with `openssl genpkey -algorithm ED25519`.
    pub(crate) const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFpwgwrbVTY/jTR8e5ES6/lPeMhU9PW5anuPPaKDplG4
-----END PRIVATE KEY-----";
}

#[cfg(test)]
mod tests {
    use super::test_keys::{ED25519_PEM, ES256_PEM};
    use super::*;
    use crate::jwt::KeySet;
    use jwt_simple::prelude::{UnixTimeStamp, VerificationOptions};

    /// Verification at the time the test tokens are minted.
    fn at_mint_time() -> VerificationOptions {
        VerificationOptions { artificial_time: Some(UnixTimeStamp::from_secs(1_700_000_000)), ..Default::default() }
    }

    fn signer(alg: SigningAlg, pem: &str) -> RequestSigner {
        RequestSigner::new(alg, &Secret::new(pem), "k1".into(), "airlock".into(), "db".into(), 30).unwrap()
    }

    fn facts<'a>(groups: &'a [String], body: &'a [u8]) -> RequestFacts<'a> {
        RequestFacts {
            subject: "agent-7",
            groups,
            jti: "req-1",
            method: "POST",
            path: "/sql?x=1",
            body,
            now_s: 1_700_000_000,
        }
    }

    /// The filter's own verifier (jwt-simple) against the published JWK.
    fn verify(signer: &RequestSigner, token: &str) -> Value {
        let jwks = json!({"keys": [signer.public_jwk()]}).to_string();
        let keys = KeySet::from_jwks_json(jwks.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1, "the published JWK is one the verifier reads");
        let (header, rest) = token.split_once('.').unwrap();
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        let alg = crate::jwt::Algorithm::from_name(header["alg"].as_str().unwrap()).unwrap();
        let key = keys.named(header["kid"].as_str()).next().unwrap();
        key.verify(alg, token, at_mint_time()).unwrap();
        let payload = rest.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn binding_is_base64url_of_sha256_over_method_path_and_body() {
        // printf 'POST\n/sql?x=1\n{"a":1}' | openssl dgst -sha256 -binary | basenc --base64url
        assert_eq!(request_binding("POST", "/sql?x=1", br#"{"a":1}"#), "sFCzoy90SeCix2DsD9f2KrY3j51eqjO-ibQRThfSTUc");
        assert_ne!(
            request_binding("POST", "/sql?x=2", br#"{"a":1}"#),
            request_binding("POST", "/sql?x=1", br#"{"a":1}"#)
        );
        assert_ne!(
            request_binding("POST", "/sql?x=1", br#"{"a":2}"#),
            request_binding("POST", "/sql?x=1", br#"{"a":1}"#)
        );
        assert_ne!(
            request_binding("PUT", "/sql?x=1", br#"{"a":1}"#),
            request_binding("POST", "/sql?x=1", br#"{"a":1}"#)
        );
    }

    #[test]
    fn es256_and_eddsa_tokens_verify_against_the_published_key_and_carry_every_claim() {
        let groups = vec!["analyst".to_string()];
        for (alg, pem) in [(SigningAlg::ES256, ES256_PEM), (SigningAlg::EdDSA, ED25519_PEM)] {
            let signer = signer(alg, pem);
            let token = signer.mint(&facts(&groups, br#"{"a":1}"#));
            let claims = verify(&signer, token.expose());
            assert_eq!(claims["iss"], "airlock");
            assert_eq!(claims["aud"], "db");
            assert_eq!(claims["sub"], "agent-7");
            assert_eq!(claims["act"], json!({"sub": "airlock"}));
            assert_eq!(claims["groups"], json!(["analyst"]));
            assert_eq!(claims["iat"], 1_700_000_000);
            assert_eq!(claims["exp"], 1_700_000_030);
            assert_eq!(claims["jti"], "req-1");
            assert_eq!(claims["req_sha256"], request_binding("POST", "/sql?x=1", br#"{"a":1}"#));
            assert_eq!(signer.public_jwk()["alg"], alg.name());
        }
    }

    #[test]
    fn a_token_signed_by_one_key_does_not_verify_with_another() {
        let es = signer(SigningAlg::ES256, ES256_PEM);
        let ed = signer(SigningAlg::EdDSA, ED25519_PEM);
        let token = es.mint(&facts(&[], b""));
        let jwks = json!({"keys": [ed.public_jwk()]}).to_string();
        let keys = KeySet::from_jwks_json(jwks.as_bytes()).unwrap();
        let key = keys.named(Some("k1")).next().unwrap();
        assert!(key.verify(crate::jwt::Algorithm::ES256, token.expose(), at_mint_time()).is_err());
    }

    #[test]
    fn a_key_of_the_wrong_kind_or_not_pem_is_refused_without_quoting_it() {
        let err =
            RequestSigner::new(SigningAlg::ES256, &Secret::new(ED25519_PEM), "k".into(), "i".into(), "a".into(), 1)
                .err()
                .unwrap();
        assert!(err.contains("P-256") && !err.contains("MC4CAQ"), "{err}");
        assert!(RequestSigner::new(SigningAlg::EdDSA, &Secret::new("hunter2"), "k".into(), "i".into(), "a".into(), 1)
            .is_err());
    }

    #[test]
    fn the_public_half_reads_the_same_from_the_private_key_and_from_its_public_pem() {
        // `openssl pkey -pubout` of ES256_PEM and ED25519_PEM.
        let es_pub = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpnMI10C/7mumIpqwmPaBLN3B5HCp
Sl5mpf2XBvV7ty7VdfEfpGrRZ5aPjeE33a+F6c4et5BUq0ODa/84q3Y3IA==
-----END PUBLIC KEY-----";
        let ed_pub = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEADqYNakSl8Qa56NAhZufqI2Cob8J6r42Wi+ulp5Rkvl8=
-----END PUBLIC KEY-----";
        for (alg, private, public) in [(SigningAlg::ES256, ES256_PEM, es_pub), (SigningAlg::EdDSA, ED25519_PEM, ed_pub)]
        {
            let from_private = public_jwk_from_pem(alg, "k1", private).unwrap();
            assert_eq!(from_private, signer(alg, private).public_jwk());
            assert_eq!(public_jwk_from_pem(alg, "k1", public).unwrap(), from_private);
            assert!(from_private.get("d").is_none(), "no private part is published");
        }
        assert!(public_jwk_from_pem(SigningAlg::EdDSA, "k1", es_pub).is_err());
    }
}
