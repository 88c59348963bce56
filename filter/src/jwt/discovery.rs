//! OpenID Connect Discovery 1.0 as a source of signing keys: the issuer's configuration
//! document names the JWKS (`jwks_uri`), which is then fetched like a `remote` JWKS.
//!
//! The document is trusted only as far as it agrees with the config: its `issuer` must
//! equal the configured one exactly (§4.3: otherwise an attacker's document could vouch
//! for keys of another issuer), and `jwks_uri` may only point where the operator allowed.
//! The fetch always goes through the configured Envoy cluster; `jwks_uri` chooses the
//! path and `:authority` only, so a document can never send the filter anywhere else.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::config_error::ConfigError;

/// Largest discovery document accepted; real ones are a few KiB.
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// What §4 appends to the issuer's path.
pub const WELL_KNOWN_SUFFIX: &str = "/.well-known/openid-configuration";
/// Issuer values quoted in errors are cut to this many characters: the document is the
/// identity provider's text and ends up in the operator's log (see `quotable`).
const MAX_QUOTED_CHARS: usize = 120;

/// The `auth.jwks.discovery` section of the plugin config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySpec {
    /// Envoy cluster of the identity provider; both fetches use it.
    pub cluster: String,
    /// `:authority` of the discovery request.
    pub authority: String,
    /// The issuer URL, exactly as in the tokens' `iss` and the document's `issuer`.
    pub issuer: String,
    /// Further authorities `jwks_uri` may name (besides `authority` and the issuer's).
    #[serde(default)]
    pub jwks_authorities: Vec<String>,
    #[serde(default = "super::default_refresh")]
    pub refresh_seconds: u64,
    #[serde(default = "super::default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "super::default_min_refresh")]
    pub min_refresh_interval_seconds: u64,
}

/// The validated checks a discovery document must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    /// `:path` of the discovery request.
    pub path: String,
    /// `jwks_uri` may be `http` only when the issuer itself is (a local test setup).
    allow_http: bool,
    /// Authorities `jwks_uri` may name, normalised (see `normalise_authority`).
    jwks_authorities: Vec<String>,
}

/// Where the JWKS is, as the document says: sent through the configured cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksLocation {
    pub authority: String,
    /// Path and query of `jwks_uri`.
    pub path: String,
}

/// Why a discovery document was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    TooLarge,
    NotJson,
    MissingIssuer,
    IssuerMismatch { found: String },
    MissingJwksUri,
    BadJwksUri(&'static str),
    SchemeNotAllowed { scheme: String },
    AuthorityNotAllowed { authority: String },
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::TooLarge => write!(f, "the discovery document is larger than {MAX_DISCOVERY_BYTES} bytes"),
            DiscoveryError::NotJson => f.write_str("the discovery document is not a JSON object"),
            DiscoveryError::MissingIssuer => f.write_str("the discovery document has no `issuer` string"),
            DiscoveryError::IssuerMismatch { found } => write!(
                f,
                "the discovery document names the issuer `{found}`, not the configured one; its keys are not used"
            ),
            DiscoveryError::MissingJwksUri => f.write_str("the discovery document has no `jwks_uri` string"),
            DiscoveryError::BadJwksUri(problem) => write!(f, "`jwks_uri` {problem}"),
            DiscoveryError::SchemeNotAllowed { scheme } => {
                write!(f, "`jwks_uri` uses `{scheme}`; only https is followed (http only for an http issuer)")
            }
            DiscoveryError::AuthorityNotAllowed { authority } => write!(
                f,
                "`jwks_uri` names the host `{authority}`, which is neither the discovery authority, the issuer's \
                    host nor listed in `jwks_authorities`"
            ),
        }
    }
}

impl Discovery {
    /// Reads `jwks_uri` from a fetched document, after checking its `issuer`.
    pub fn jwks_location(&self, body: &[u8]) -> Result<JwksLocation, DiscoveryError> {
        if body.len() > MAX_DISCOVERY_BYTES {
            return Err(DiscoveryError::TooLarge);
        }
        let doc: Value = serde_json::from_slice(body).map_err(|_| DiscoveryError::NotJson)?;
        let doc = doc.as_object().ok_or(DiscoveryError::NotJson)?;
        let issuer = doc.get("issuer").and_then(Value::as_str).ok_or(DiscoveryError::MissingIssuer)?;
        if issuer != self.issuer {
            return Err(DiscoveryError::IssuerMismatch { found: quotable(issuer) });
        }
        let uri = doc.get("jwks_uri").and_then(Value::as_str).ok_or(DiscoveryError::MissingJwksUri)?;
        let url = Url::parse(uri).map_err(DiscoveryError::BadJwksUri)?;
        if url.has_fragment() {
            return Err(DiscoveryError::BadJwksUri("must not have a fragment"));
        }
        let scheme_ok = url.scheme == "https" || (url.scheme == "http" && self.allow_http);
        if !scheme_ok {
            return Err(DiscoveryError::SchemeNotAllowed { scheme: url.scheme.chars().take(16).collect() });
        }
        let authority = normalise_authority(url.authority, &url.scheme);
        if !self.jwks_authorities.contains(&authority) {
            return Err(DiscoveryError::AuthorityNotAllowed { authority: authority.chars().take(80).collect() });
        }
        Ok(JwksLocation { authority, path: url.path_and_query() })
    }
}

/// Validates what is particular to discovery in `spec` (`field` is `auth.jwks.discovery`;
/// `issuers` are `auth.issuers`); cluster, authority and timing are checked like `remote`'s.
pub(crate) fn compile(spec: &DiscoverySpec, field: &str, issuers: &[String]) -> Result<Discovery, ConfigError> {
    let issuer_field = format!("{field}.issuer");
    let url = Url::parse(&spec.issuer).map_err(|p| ConfigError::new(&issuer_field, format!("the issuer URL {p}")))?;
    if url.scheme != "https" && url.scheme != "http" {
        return Err(ConfigError::new(issuer_field, "must be an https URL (http only for local tests)"));
    }
    if url.has_query() || url.has_fragment() {
        return Err(ConfigError::new(issuer_field, "must have no query or fragment (OpenID Connect Discovery §3)"));
    }
    if !issuers.contains(&spec.issuer) {
        return Err(ConfigError::new(
            issuer_field,
            "must be one of `auth.issuers`: the keys it publishes only verify tokens of that issuer",
        ));
    }
    let mut jwks_authorities =
        vec![normalise_authority(&spec.authority, &url.scheme), normalise_authority(url.authority, &url.scheme)];
    for (i, extra) in spec.jwks_authorities.iter().enumerate() {
        if !is_authority(extra) {
            return Err(ConfigError::new(
                format!("{field}.jwks_authorities[{i}]"),
                "must be a host name, optionally with `:port`",
            ));
        }
        jwks_authorities.push(normalise_authority(extra, "https"));
    }
    // §4: the suffix goes after the issuer's path, without doubling its trailing slash.
    let path = format!("{}{WELL_KNOWN_SUFFIX}", url.rest.trim_end_matches('/'));
    Ok(Discovery { issuer: spec.issuer.clone(), path, allow_http: url.scheme == "http", jwks_authorities })
}

/// `text` fit for a log line: cut short, control characters (a forged line break)
/// replaced.
fn quotable(text: &str) -> String {
    text.chars().take(MAX_QUOTED_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A host name or address with an optional port, as `:authority` carries it.
pub(crate) fn is_authority(text: &str) -> bool {
    !text.is_empty() && !text.bytes().any(|b| b <= b' ' || b == 0x7f || b"/?#@\\".contains(&b))
}

/// Lower-case, without the scheme's default port, so `IdP.example:443` and `idp.example`
/// are the same host for an https URL.
fn normalise_authority(authority: &str, scheme: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    match lower.strip_suffix(default_port) {
        Some(host) if !host.is_empty() => host.to_string(),
        _ => lower,
    }
}

/// An absolute `scheme://authority/rest` URL, split as far as the checks need. No
/// library: the filter only needs these three parts, and stricter rules than a browser's.
struct Url<'a> {
    scheme: String,
    authority: &'a str,
    /// Path, query and fragment, as written (may be empty).
    rest: &'a str,
}

impl<'a> Url<'a> {
    fn parse(text: &'a str) -> Result<Url<'a>, &'static str> {
        if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("must not contain spaces or control characters");
        }
        let (scheme, after) = text.split_once("://").ok_or("must be an absolute URL such as `https://host/path`")?;
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        if authority.contains('@') {
            return Err("must not carry user information (`user@`)");
        }
        if !is_authority(authority) {
            return Err("must name a host");
        }
        Ok(Url { scheme: scheme.to_ascii_lowercase(), authority, rest })
    }

    fn has_query(&self) -> bool {
        self.rest.contains('?')
    }

    fn has_fragment(&self) -> bool {
        self.rest.contains('#')
    }

    /// What goes into `:path`: never empty, always starting with `/`.
    fn path_and_query(&self) -> String {
        if self.rest.starts_with('/') {
            self.rest.to_string()
        } else {
            format!("/{}", self.rest)
        }
    }
}
