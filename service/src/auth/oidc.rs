//! Optional OIDC sign-in for approvers and auditors: a bearer JWT from the organisation's
//! identity provider, verified against a JWKS loaded from a file or URL (refreshed
//! periodically). `iss`, `aud` and `exp` are required; only asymmetric algorithms are
//! accepted (no `none`, no HMAC, so a public key can never be misused as an HMAC secret).
//! The approver's name and groups come from configurable claims.
//!
//! The JWKS parsing, key selection, signature check and claim paths are the filter's own
//! (`airlock_filter::jwt`); this module adds what differs for approvers: jwt-simple checks
//! issuer, audience and time here, and the token names a principal with roles.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use airlock_filter::jwt::{groups_of, Algorithm, ClaimPath, JwksError, KeySet, MAX_CANDIDATE_KEYS};
use jwt_simple::prelude::{Token, VerificationOptions};
use serde::Deserialize;
use serde_json::Value;

use super::principal::{Principal, Role};
use crate::config_error::ConfigError;
use crate::error::truncate;

fn default_name_claim() -> String {
    "sub".to_string()
}

fn default_groups_claim() -> String {
    "groups".to_string()
}

fn default_leeway() -> u64 {
    60
}

fn default_refresh() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (the console's client id).
    pub audience: String,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Claim naming the approver (compared with request subjects for self-approval).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// Claim holding the groups; a dotted path reaches nested claims (`realm_access.roles`).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Members of these groups also get the auditor role.
    #[serde(default)]
    pub auditor_groups: Vec<String>,
    /// Clock skew tolerated on `exp`/`nbf`/`iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// How often a `jwks_url` is fetched again, in seconds.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    /// Console sign-in with the authorization code flow (`[oidc.login]`); off when absent.
    #[serde(default)]
    pub login: Option<super::login::LoginConfig>,
}

impl OidcConfig {
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.issuer.trim().is_empty() {
            return Err(ConfigError::new(format!("{field}.issuer"), "must not be empty"));
        }
        if self.audience.trim().is_empty() {
            return Err(ConfigError::new(format!("{field}.audience"), "must not be empty"));
        }
        match (&self.jwks_file, &self.jwks_url) {
            (Some(_), None) => {}
            (None, Some(u)) if u.starts_with("https://") || u.starts_with("http://") => {}
            (None, Some(_)) => return Err(ConfigError::new(format!("{field}.jwks_url"), "must be an http(s) URL")),
            _ => return Err(ConfigError::new(field, "set exactly one of `jwks_file` and `jwks_url`")),
        }
        if self.leeway_seconds > 600 {
            return Err(ConfigError::new(format!("{field}.leeway_seconds"), "must be at most 600"));
        }
        for (name, path) in [("name_claim", &self.name_claim), ("groups_claim", &self.groups_claim)] {
            claim_path(path, &format!("{field}.{name}"))?;
        }
        if self.refresh_seconds < 10 {
            return Err(ConfigError::new(format!("{field}.refresh_seconds"), "must be at least 10"));
        }
        if let Some(login) = &self.login {
            login.validate(&format!("{field}.login"))?;
        }
        Ok(())
    }
}

/// A claim name of the config as the filter's claim path; `field` names it in errors.
fn claim_path(name: &str, field: &str) -> Result<ClaimPath, ConfigError> {
    ClaimPath::parse(name).map_err(|problem| ConfigError::new(field, problem))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OidcError {
    #[error("the JWKS is not valid JSON with a `keys` array")]
    BadJwks,
    #[error("the JWKS is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the JWKS holds no usable RSA, EC (P-256/P-384) or Ed25519 signing key")]
    NoKeys,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm `{0}` is not accepted")]
    Algorithm(String),
    #[error("no key of the JWKS verifies the token")]
    Signature,
    #[error("the token has no `exp` claim")]
    NoExpiry,
    #[error("the token has no `{0}` claim naming the approver")]
    NoName(String),
}

impl From<JwksError> for OidcError {
    fn from(e: JwksError) -> OidcError {
        match e {
            JwksError::TooLarge { limit } => OidcError::TooLarge(limit),
            JwksError::NoUsableKey { .. } => OidcError::NoKeys,
            JwksError::NotJson | JwksError::MissingKeys | JwksError::TooManyKeys { .. } | JwksError::BadKey { .. } => {
                OidcError::BadJwks
            }
        }
    }
}

/// Parses a JWKS with the filter's parser, which skips keys it cannot use (symmetric,
/// encryption, unknown curves, malformed); each skipped key is logged.
pub fn parse_jwks(bytes: &[u8]) -> Result<KeySet, OidcError> {
    let keys = KeySet::from_jwks_json(bytes)?;
    for skipped in keys.skipped() {
        tracing::info!(key = %skipped, "JWKS key skipped");
    }
    Ok(keys)
}

pub struct OidcVerifier {
    config: OidcConfig,
    name_claim: ClaimPath,
    groups_claim: ClaimPath,
    options: VerificationOptions,
    keys: RwLock<Arc<KeySet>>,
}

impl OidcVerifier {
    /// Fails only on a claim name `OidcConfig::validate` would have refused.
    pub fn new(config: OidcConfig, keys: KeySet) -> Result<OidcVerifier, ConfigError> {
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([config.issuer.clone()])),
            allowed_audiences: Some(HashSet::from([config.audience.clone()])),
            time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(config.leeway_seconds)),
            ..VerificationOptions::default()
        };
        Ok(OidcVerifier {
            name_claim: claim_path(&config.name_claim, "oidc.name_claim")?,
            groups_claim: claim_path(&config.groups_claim, "oidc.groups_claim")?,
            config,
            options,
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    pub fn replace_keys(&self, keys: KeySet) {
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(keys);
        }
    }

    fn current_keys(&self) -> Arc<KeySet> {
        self.keys.read().map(|k| Arc::clone(&k)).unwrap_or_default()
    }

    /// The principal a valid token names.
    pub fn verify(&self, token: &str) -> Result<Principal, OidcError> {
        self.verify_with(token, self.options.clone())
    }

    /// The principal an ID token names, which must carry the `nonce` its sign-in sent.
    pub fn verify_id_token(&self, token: &str, nonce: &str) -> Result<Principal, OidcError> {
        let options = VerificationOptions { required_nonce: Some(nonce.to_string()), ..self.options.clone() };
        self.verify_with(token, options)
    }

    fn verify_with(&self, token: &str, options: VerificationOptions) -> Result<Principal, OidcError> {
        let meta = Token::decode_metadata(token).map_err(|_| OidcError::Malformed)?;
        let alg = Algorithm::from_name(meta.algorithm())
            // Asymmetric only: an IdP's public key must never serve as an HMAC secret.
            .filter(|a| !a.is_hmac())
            .ok_or_else(|| OidcError::Algorithm(truncate(meta.algorithm(), 16).to_string()))?;
        let keys = self.current_keys();
        let claims = keys
            .named(meta.key_id())
            .filter(|k| k.supports(alg))
            .take(MAX_CANDIDATE_KEYS)
            .find_map(|k| k.verify(alg, token, options.clone()).ok())
            .ok_or(OidcError::Signature)?;
        if claims.expires_at.is_none() {
            return Err(OidcError::NoExpiry);
        }
        let name = if self.name_claim.as_str() == "sub" {
            claims.subject.clone()
        } else {
            self.name_claim.lookup(&claims.custom).and_then(Value::as_str).map(str::to_string)
        }
        .filter(|n| !n.is_empty())
        .ok_or_else(|| OidcError::NoName(self.config.name_claim.clone()))?;
        let groups = self.groups_claim.lookup(&claims.custom).map(groups_of).unwrap_or_default();
        let mut roles = vec![Role::Approver];
        if groups.iter().any(|g| self.config.auditor_groups.contains(g)) {
            roles.push(Role::Auditor);
        }
        Ok(Principal { name, groups, roles })
    }
}

/// Loads the key set named by the config: the file, or one fetch of the URL.
pub async fn load_keys(config: &OidcConfig, client: &reqwest::Client) -> Result<KeySet, String> {
    if let Some(path) = &config.jwks_file {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read oidc.jwks_file {}: {e}", path.display()))?;
        return parse_jwks(&bytes).map_err(|e| format!("oidc.jwks_file: {e}"));
    }
    let url = config.jwks_url.as_deref().ok_or("no JWKS source configured")?;
    let resp = client.get(url).send().await.map_err(|e| format!("cannot fetch oidc.jwks_url: {}", e.without_url()))?;
    if !resp.status().is_success() {
        return Err(format!("oidc.jwks_url answered HTTP {}", resp.status().as_u16()));
    }
    let bytes = resp.bytes().await.map_err(|e| format!("cannot read oidc.jwks_url: {}", e.without_url()))?;
    parse_jwks(&bytes).map_err(|e| format!("oidc.jwks_url: {e}"))
}

/// Re-fetches a `jwks_url` every `refresh_seconds`, keeping the old keys on failure.
pub fn spawn_refresh(verifier: Arc<OidcVerifier>, client: reqwest::Client) {
    if verifier.config().jwks_url.is_none() {
        return;
    }
    tokio::spawn(async move {
        let every = Duration::from_secs(verifier.config().refresh_seconds);
        loop {
            tokio::time::sleep(every).await;
            match load_keys(verifier.config(), &client).await {
                Ok(keys) => verifier.replace_keys(keys),
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jwt_simple::prelude::*;
    use serde_json::json;

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.example".into(),
            audience: "airlock".into(),
            jwks_file: Some("/dev/null".into()),
            jwks_url: None,
            name_claim: "email".into(),
            groups_claim: "realm_access.roles".into(),
            auditor_groups: vec!["audit".into()],
            leeway_seconds: 5,
            refresh_seconds: 600,
            login: None,
        }
    }

    fn es256() -> (ES256KeyPair, KeySet) {
        let kp = ES256KeyPair::generate().with_key_id("k1");
        let point = kp.public_key().public_key().to_bytes_uncompressed();
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "x": enc(&point[1..33]), "y": enc(&point[33..])}
        ]});
        let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap();
        (kp, keys)
    }

    fn claims(extra: Value) -> JWTClaims<Value> {
        Claims::with_custom_claims(extra, jwt_simple::prelude::Duration::from_mins(5))
            .with_issuer("https://idp.example")
            .with_audience("airlock")
    }

    #[test]
    fn valid_token_yields_name_groups_and_roles_from_claims() {
        let (kp, keys) = es256();
        let v = OidcVerifier::new(config(), keys).unwrap();
        let token = kp
            .sign(claims(json!({"email": "alice@example.com", "realm_access": {"roles": ["dba", "audit"]}})))
            .unwrap();
        let p = v.verify(&token).unwrap();
        assert_eq!(p.name, "alice@example.com");
        assert_eq!(p.groups, vec!["dba".to_string(), "audit".to_string()]);
        assert!(p.has_role(Role::Auditor) && p.has_role(Role::Approver));
    }

    #[test]
    fn wrong_audience_issuer_or_expired_tokens_are_refused() {
        let (kp, keys) = es256();
        let v = OidcVerifier::new(config(), keys).unwrap();
        let body = json!({"email": "a@example.com"});
        let t = kp.sign(claims(body.clone()).with_audience("other")).unwrap();
        assert_eq!(v.verify(&t), Err(OidcError::Signature));
        let t = kp.sign(claims(body.clone()).with_issuer("https://evil.example")).unwrap();
        assert_eq!(v.verify(&t), Err(OidcError::Signature));
        let mut c = claims(body.clone());
        c.expires_at = Some(Clock::now_since_epoch() - jwt_simple::prelude::Duration::from_mins(5));
        assert_eq!(v.verify(&kp.sign(c).unwrap()), Err(OidcError::Signature));
        let mut c = claims(body);
        c.expires_at = None;
        assert_eq!(v.verify(&kp.sign(c).unwrap()), Err(OidcError::NoExpiry));
    }

    #[test]
    fn tokens_from_another_key_none_or_hmac_are_refused() {
        let (_, keys) = es256();
        let v = OidcVerifier::new(config(), keys).unwrap();
        let other = ES256KeyPair::generate().with_key_id("k1");
        let t = other.sign(claims(json!({"email": "a@example.com"}))).unwrap();
        assert_eq!(v.verify(&t), Err(OidcError::Signature));
        let hs = HS256Key::generate();
        let t = hs.authenticate(claims(json!({"email": "a@example.com"}))).unwrap();
        assert_eq!(v.verify(&t), Err(OidcError::Algorithm("HS256".into())));
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", enc(r#"{"alg":"none","typ":"JWT"}"#), enc(r#"{"email":"a@example.com"}"#));
        assert!(matches!(v.verify(&none), Err(OidcError::Algorithm(_)) | Err(OidcError::Malformed)));
        assert_eq!(v.verify("not.a.jwt"), Err(OidcError::Malformed));
    }

    #[test]
    fn rs256_tokens_verify_against_modulus_and_exponent() {
        let kp = RS256KeyPair::generate(2048).unwrap().with_key_id("r1");
        let c = kp.public_key().to_components();
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [{"kty": "RSA", "kid": "r1", "n": enc(&c.n), "e": enc(&c.e)}]});
        let v = OidcVerifier::new(config(), parse_jwks(jwks.to_string().as_bytes()).unwrap()).unwrap();
        let t = kp.sign(claims(json!({"email": "r@example.com"}))).unwrap();
        assert_eq!(v.verify(&t).unwrap().name, "r@example.com");
        // The same RSA key cannot be used under a different algorithm family.
        let ps = PS256KeyPair::generate(2048).unwrap().with_key_id("r1");
        assert_eq!(v.verify(&ps.sign(claims(json!({"email": "r@example.com"}))).unwrap()), Err(OidcError::Signature));
    }

    #[test]
    fn missing_name_claim_is_refused() {
        let (kp, keys) = es256();
        let v = OidcVerifier::new(config(), keys).unwrap();
        let t = kp.sign(claims(json!({"groups": ["dba"]}))).unwrap();
        assert_eq!(v.verify(&t), Err(OidcError::NoName("email".into())));
    }

    #[test]
    fn jwks_without_signing_keys_is_an_error() {
        assert_eq!(parse_jwks(br#"{"keys":[{"kty":"oct","k":"eA"}]}"#).err(), Some(OidcError::NoKeys));
        assert_eq!(parse_jwks(b"[]").err(), Some(OidcError::BadJwks));
    }

    #[test]
    fn config_refuses_claim_paths_the_filter_would_refuse() {
        let mut c = config();
        c.groups_claim = "realm_access..roles".into();
        let err = c.validate("oidc").unwrap_err();
        assert_eq!(err.field, "oidc.groups_claim");
        c.groups_claim = "groups".into();
        c.name_claim = String::new();
        assert_eq!(c.validate("oidc").unwrap_err().field, "oidc.name_claim");
    }

    #[test]
    fn namespaced_groups_claim_with_dots_is_read_as_written() {
        let (kp, keys) = es256();
        let mut c = config();
        c.groups_claim = "https://idp.example/groups".into();
        let v = OidcVerifier::new(c, keys).unwrap();
        let t = kp.sign(claims(json!({"email": "a@example.com", "https://idp.example/groups": "dba audit"}))).unwrap();
        let p = v.verify(&t).unwrap();
        assert_eq!(p.groups, vec!["dba".to_string(), "audit".to_string()]);
        assert!(p.has_role(Role::Auditor));
    }

    #[test]
    fn config_requires_exactly_one_jwks_source() {
        let mut c = config();
        assert!(c.validate("oidc").is_ok());
        c.jwks_url = Some("https://idp.example/jwks".into());
        assert_eq!(c.validate("oidc").unwrap_err().field, "oidc");
        c.jwks_file = None;
        assert!(c.validate("oidc").is_ok());
    }
}
