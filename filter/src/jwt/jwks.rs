//! JSON Web Key Sets: parsing keys once, choosing candidate keys per token, and verifying
//! a signature with exactly the algorithm family a key belongs to.
//!
//! Algorithm confusion is stopped here by construction: a key is stored as its typed
//! public key (RSA, P-256, P-384, Ed25519, or an HMAC secret) and `supports` only admits
//! the algorithms of that type, so an RSA public key can never be used as an HMAC secret.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use jwt_simple::prelude::{
    ECDSAP256PublicKeyLike, ECDSAP384PublicKeyLike, ES256PublicKey, ES384PublicKey, Ed25519PublicKey,
    EdDSAPublicKeyLike, HS256Key, HS384Key, HS512Key, JWTClaims, MACLike, PS256PublicKey, PS384PublicKey,
    PS512PublicKey, RS256PublicKey, RS384PublicKey, RS512PublicKey, RSAPublicKeyLike, VerificationOptions,
};
use serde_json::{Map, Value};

use super::alg::{Algorithm, AlgorithmSet};
use super::error::JwksError;

/// Largest JWKS document accepted; real ones are a few KiB.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys one JWKS may hold; identity providers publish a handful.
pub const MAX_KEYS: usize = 100;

/// JWK members are base64url; some publishers pad them, which is harmless, so padding is
/// optional here (token segments, in contrast, are checked strictly).
const JWK_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Claims as jwt-simple hands them over: registered claims typed, the rest in a map.
pub type Claims = JWTClaims<Map<String, Value>>;

/// The verification keys of one issuer (or several), ready to use.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
    skipped: Vec<JwksError>,
}

impl KeySet {
    /// An empty set: what the filter holds before the first remote fetch. Every token
    /// that is not already cached then fails with `AuthError::NoKeys`.
    pub fn empty() -> KeySet {
        KeySet::default()
    }

    /// Parses a fetched JWKS. Unsupported and malformed keys are skipped (see `skipped`),
    /// so one odd key published by the identity provider does not lock everyone out; a
    /// document with no usable key at all is an error, so the caller keeps the old set.
    pub fn from_jwks_json(bytes: &[u8]) -> Result<KeySet, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge { limit: MAX_JWKS_BYTES });
        }
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::NotJson)?;
        KeySet::from_value(&doc, Mode::Lenient)
    }

    /// Parses a JWKS written into the plugin config: a malformed key is an error naming
    /// it, because the operator can fix it now. Unsupported keys (an encryption key, a
    /// P-521 key) are still skipped, so an identity provider's JWKS can be pasted as is.
    /// Also accepts the document as a JSON string, as it is often copied.
    pub(crate) fn from_inline(doc: &Value) -> Result<KeySet, JwksError> {
        match doc {
            Value::String(text) => {
                if text.len() > MAX_JWKS_BYTES {
                    return Err(JwksError::TooLarge { limit: MAX_JWKS_BYTES });
                }
                let inner: Value = serde_json::from_str(text).map_err(|_| JwksError::NotJson)?;
                KeySet::from_value(&inner, Mode::Strict)
            }
            other => KeySet::from_value(other, Mode::Strict),
        }
    }

    fn from_value(doc: &Value, mode: Mode) -> Result<KeySet, JwksError> {
        let entries = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::MissingKeys)?;
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys { limit: MAX_KEYS });
        }
        let mut set = KeySet { keys: Vec::with_capacity(entries.len()), skipped: Vec::new() };
        for (index, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(key) => set.keys.push(key),
                Err(Skip::Unsupported(problem)) => {
                    set.skipped.push(JwksError::BadKey { index, member: "", problem });
                }
                Err(Skip::Malformed(member, problem)) => {
                    let err = JwksError::BadKey { index, member, problem };
                    if mode == Mode::Strict {
                        return Err(err);
                    }
                    set.skipped.push(err);
                }
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKey { skipped: set.skipped.len() });
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that were left out, with the reason, for the operator's log.
    pub fn skipped(&self) -> &[JwksError] {
        &self.skipped
    }

    /// True when at least one key can verify at least one algorithm of `set`.
    pub(crate) fn supports_any(&self, set: AlgorithmSet) -> bool {
        self.keys.iter().any(|k| Algorithm::ALL.iter().any(|a| set.contains(*a) && k.supports(*a)))
    }

    /// Keys a token may have been signed with: those whose `kid` equals the token's (keys
    /// published without `kid` also qualify), or every key when the token has no `kid`.
    pub fn named<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| match (kid, k.kid.as_deref()) {
            (Some(wanted), Some(have)) => wanted == have,
            _ => true,
        })
    }
}

impl fmt::Debug for KeySet {
    /// Key ids and types only; never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> =
            self.keys.iter().map(|k| format!("{}:{}", k.material.kind(), k.kid.as_deref().unwrap_or("-"))).collect();
        f.debug_struct("KeySet").field("keys", &keys).field("skipped", &self.skipped.len()).finish()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Config: malformed keys are errors.
    Strict,
    /// Fetched: malformed keys are skipped.
    Lenient,
}

enum Skip {
    /// A key type or use Airlock does not verify with; never an error.
    Unsupported(String),
    /// A key that claims to be supported but is broken: (member, problem).
    Malformed(&'static str, String),
}

/// One verification key.
pub struct Jwk {
    kid: Option<String>,
    /// The JWK's own `alg`: when present, the only algorithm this key verifies.
    alg: Option<Algorithm>,
    material: Material,
}

/// Typed public keys (or HMAC secrets), built once at parse time. RSA keys are held in
/// all six algorithm wrappers because jwt-simple ties the padding/hash to the type.
enum Material {
    Rsa(Box<RsaKeys>),
    P256(ES256PublicKey),
    P384(ES384PublicKey),
    Ed25519(Box<Ed25519PublicKey>),
    /// jwt-simple's HMAC keys wipe their bytes when dropped.
    Oct(Box<OctKeys>),
}

struct RsaKeys {
    rs256: RS256PublicKey,
    rs384: RS384PublicKey,
    rs512: RS512PublicKey,
    ps256: PS256PublicKey,
    ps384: PS384PublicKey,
    ps512: PS512PublicKey,
}

struct OctKeys {
    len: usize,
    hs256: HS256Key,
    hs384: HS384Key,
    hs512: HS512Key,
}

impl Material {
    fn kind(&self) -> &'static str {
        match self {
            Material::Rsa(_) => "RSA",
            Material::P256(_) => "EC/P-256",
            Material::P384(_) => "EC/P-384",
            Material::Ed25519(_) => "OKP/Ed25519",
            Material::Oct(_) => "oct",
        }
    }

    /// Whether this key type may verify `alg` at all.
    fn admits(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Material::Rsa(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Material::P256(_) => alg == ES256,
            Material::P384(_) => alg == ES384,
            Material::Ed25519(_) => alg == EdDSA,
            Material::Oct(k) => alg.min_hmac_key_len().is_some_and(|min| k.len >= min),
        }
    }
}

impl Jwk {
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// True when this key may verify a token signed with `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|own| own == alg) && self.material.admits(alg)
    }

    /// Checks the signature with this key and decodes the claims. jwt-simple re-checks
    /// that the header's `alg` is the one of the key wrapper used, so the dispatch below
    /// cannot be steered by the token either. `options` decide which claims jwt-simple
    /// checks itself (the filter switches its time checks off, see `verify.rs`).
    pub fn verify(
        &self,
        alg: Algorithm,
        token: &str,
        options: VerificationOptions,
    ) -> Result<Claims, jwt_simple::Error> {
        let opts = Some(options);
        match (&self.material, alg) {
            (Material::Rsa(k), Algorithm::RS256) => k.rs256.verify_token(token, opts),
            (Material::Rsa(k), Algorithm::RS384) => k.rs384.verify_token(token, opts),
            (Material::Rsa(k), Algorithm::RS512) => k.rs512.verify_token(token, opts),
            (Material::Rsa(k), Algorithm::PS256) => k.ps256.verify_token(token, opts),
            (Material::Rsa(k), Algorithm::PS384) => k.ps384.verify_token(token, opts),
            (Material::Rsa(k), Algorithm::PS512) => k.ps512.verify_token(token, opts),
            (Material::P256(k), Algorithm::ES256) => k.verify_token(token, opts),
            (Material::P384(k), Algorithm::ES384) => k.verify_token(token, opts),
            (Material::Ed25519(k), Algorithm::EdDSA) => k.verify_token(token, opts),
            (Material::Oct(k), Algorithm::HS256) => k.hs256.verify_token(token, opts),
            (Material::Oct(k), Algorithm::HS384) => k.hs384.verify_token(token, opts),
            (Material::Oct(k), Algorithm::HS512) => k.hs512.verify_token(token, opts),
            // Unreachable when callers check `supports` first; refuse rather than guess.
            _ => Err(jwt_simple::JWTError::AlgorithmMismatch.into()),
        }
    }
}

fn parse_key(entry: &Value) -> Result<Jwk, Skip> {
    let obj = entry.as_object().ok_or_else(|| Skip::Malformed("", "a key must be a JSON object".into()))?;
    let kty = str_member(obj, "kty")?.ok_or_else(|| Skip::Malformed("kty", "is required".into()))?;
    if let Some(usage) = str_member(obj, "use")? {
        if usage != "sig" {
            return Err(Skip::Unsupported(format!("`use` is `{usage}`, not `sig`")));
        }
    }
    let kid = str_member(obj, "kid")?.map(str::to_owned);
    let alg = match str_member(obj, "alg")? {
        None => None,
        Some(name) => match Algorithm::from_name(name) {
            Some(a) => Some(a),
            None => return Err(Skip::Unsupported(format!("algorithm `{name}` is not supported"))),
        },
    };
    let material = match kty {
        "RSA" => parse_rsa(obj)?,
        "EC" => parse_ec(obj)?,
        "OKP" => parse_okp(obj)?,
        "oct" => parse_oct(obj, alg)?,
        other => return Err(Skip::Unsupported(format!("key type `{other}` is not supported"))),
    };
    if let Some(a) = alg {
        if !material.admits(a) {
            return Err(Skip::Malformed("alg", format!("`{a}` cannot be used with a {} key", material.kind())));
        }
    }
    Ok(Jwk { kid, alg, material })
}

/// An optional string member; present with another type is malformed.
fn str_member<'a>(obj: &'a Map<String, Value>, member: &'static str) -> Result<Option<&'a str>, Skip> {
    match obj.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Skip::Malformed(member, "must be a string".into())),
    }
}

/// A required base64url member, decoded.
fn bytes_member(obj: &Map<String, Value>, member: &'static str) -> Result<Vec<u8>, Skip> {
    let text = str_member(obj, member)?.ok_or_else(|| Skip::Malformed(member, "is required".into()))?;
    JWK_B64.decode(text).map_err(|_| Skip::Malformed(member, "is not valid base64url".into()))
}

fn parse_rsa(obj: &Map<String, Value>) -> Result<Material, Skip> {
    let n = bytes_member(obj, "n")?;
    let e = bytes_member(obj, "e")?;
    let n_trimmed = trim_leading_zeros(&n);
    let bits = n_trimmed.len() * 8 - n_trimmed.first().map_or(0, |b| b.leading_zeros() as usize);
    if !(2048..=4096).contains(&bits) {
        return Err(Skip::Malformed("n", format!("the RSA modulus has {bits} bits; 2048 to 4096 are supported")));
    }
    if trim_leading_zeros(&e) != [1, 0, 1] {
        return Err(Skip::Malformed("e", "only the public exponent 65537 (`AQAB`) is supported".into()));
    }
    let bad = |_| Skip::Malformed("n", "is not a valid RSA public key".into());
    let keys = RsaKeys {
        rs256: RS256PublicKey::from_components(&n, &e).map_err(bad)?,
        rs384: RS384PublicKey::from_components(&n, &e).map_err(bad)?,
        rs512: RS512PublicKey::from_components(&n, &e).map_err(bad)?,
        ps256: PS256PublicKey::from_components(&n, &e).map_err(bad)?,
        ps384: PS384PublicKey::from_components(&n, &e).map_err(bad)?,
        ps512: PS512PublicKey::from_components(&n, &e).map_err(bad)?,
    };
    Ok(Material::Rsa(Box::new(keys)))
}

fn parse_ec(obj: &Map<String, Value>) -> Result<Material, Skip> {
    let crv = str_member(obj, "crv")?.ok_or_else(|| Skip::Malformed("crv", "is required".into()))?;
    let size = match crv {
        "P-256" => 32,
        "P-384" => 48,
        other => return Err(Skip::Unsupported(format!("EC curve `{other}` is not supported"))),
    };
    let x = bytes_member(obj, "x")?;
    let y = bytes_member(obj, "y")?;
    for (member, coord) in [("x", &x), ("y", &y)] {
        if coord.len() != size {
            return Err(Skip::Malformed(member, format!("must be {size} bytes for {crv}, not {}", coord.len())));
        }
    }
    // SEC1 uncompressed point: 0x04 || x || y.
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let not_on_curve = |_| Skip::Malformed("x", format!("(x, y) is not a point on {crv}"));
    if size == 32 {
        Ok(Material::P256(ES256PublicKey::from_bytes(&point).map_err(not_on_curve)?))
    } else {
        Ok(Material::P384(ES384PublicKey::from_bytes(&point).map_err(not_on_curve)?))
    }
}

fn parse_okp(obj: &Map<String, Value>) -> Result<Material, Skip> {
    let crv = str_member(obj, "crv")?.ok_or_else(|| Skip::Malformed("crv", "is required".into()))?;
    if crv != "Ed25519" {
        return Err(Skip::Unsupported(format!("OKP curve `{crv}` is not supported")));
    }
    let x = bytes_member(obj, "x")?;
    if x.len() != 32 {
        return Err(Skip::Malformed("x", format!("must be 32 bytes for Ed25519, not {}", x.len())));
    }
    let key = Ed25519PublicKey::from_bytes(&x)
        .map_err(|_| Skip::Malformed("x", "is not a valid Ed25519 public key".into()))?;
    Ok(Material::Ed25519(Box::new(key)))
}

fn parse_oct(obj: &Map<String, Value>, alg: Option<Algorithm>) -> Result<Material, Skip> {
    let mut k = bytes_member(obj, "k")?;
    let min = alg.and_then(Algorithm::min_hmac_key_len).unwrap_or(32);
    if k.len() < min {
        let for_alg = alg.map_or(String::from("HS256"), |a| a.to_string());
        k.fill(0);
        return Err(Skip::Malformed("k", format!("the secret has {} bytes; {for_alg} needs at least {min}", k.len())));
    }
    let keys = OctKeys {
        len: k.len(),
        hs256: HS256Key::from_bytes(&k),
        hs384: HS384Key::from_bytes(&k),
        hs512: HS512Key::from_bytes(&k),
    };
    // Best effort: the typed keys hold (and wipe) their own copies.
    k.fill(0);
    Ok(Material::Oct(Box::new(keys)))
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}
