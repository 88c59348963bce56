//! Token check: who is calling, proven by a JWT signed by a trusted identity provider.
//!
//! - `compile` validates the `auth` section of the plugin config once, parsing an inline
//!   JWKS there so a bad key fails the plugin start with the key and member named.
//! - `KeySet` holds verification keys (inline, or fetched as `KeyFetch` says, directly
//!   or after OpenID Connect discovery, and parsed with `KeySet::from_jwks_json`).
//! - `Verifier` checks a token against a key set and caches the result per token.
//!
//! Nothing here reads the clock or does I/O: the caller passes `now` and the keys, so
//! the module runs the same natively (tests) and in the Wasm VM.

mod alg;
mod cache;
mod claims;
mod discovery;
mod error;
mod jwks;
mod verify;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod test_support;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests;

use serde::Deserialize;

use crate::config_error::ConfigError;

pub use alg::{Algorithm, AlgorithmSet};
use claims::ClaimRules;
pub use claims::{groups_of, ClaimPath};
pub use discovery::{Discovery, DiscoveryError, DiscoverySpec, JwksLocation, MAX_DISCOVERY_BYTES, WELL_KNOWN_SUFFIX};
pub use error::{AuthError, JwksError};
pub use jwks::{Claims, Jwk, KeySet, MAX_JWKS_BYTES, MAX_KEYS};
pub use verify::{bearer_token, Verifier, MAX_CANDIDATE_KEYS, MAX_TOKEN_BYTES};

/// Largest accepted `clock_skew_seconds`: more would keep expired tokens alive for long.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// Largest accepted `cache_entries` (each entry holds its token; the cache also caps the
/// bytes it keeps, see `cache::MAX_CACHED_TOKEN_BYTES`).
pub const MAX_CACHE_ENTRIES: usize = 100_000;

/// The `auth` section of the plugin config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// Accepted `iss` values; required, non-empty.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (the token's `aud` must contain one); required, non-empty.
    pub audiences: Vec<String>,
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Request header carrying `Bearer <token>`.
    #[serde(default = "default_header")]
    pub header: String,
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Dotted path (`groups`, `roles`, `realm_access.roles`); the value is an array of
    /// strings or a space-separated string. Absent: identities have no groups.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Allow-list of `alg` values; absent: every supported algorithm.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    pub jwks: JwksSpec,
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

fn default_clock_skew() -> u64 {
    30
}

fn default_header() -> String {
    "authorization".into()
}

fn default_subject_claim() -> String {
    "sub".into()
}

fn default_cache_entries() -> usize {
    10_000
}

/// Where the verification keys come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum JwksSpec {
    /// A JWKS document (object, or the same as a JSON string) written into the config.
    Inline(serde_json::Value),
    /// A JWKS fetched over an Envoy cluster and refreshed on a timer.
    Remote(RemoteJwks),
    /// The JWKS the issuer's OpenID Connect discovery document names, both fetched over
    /// an Envoy cluster and refreshed on a timer.
    Discovery(DiscoverySpec),
}

/// How the host glue fetches the JWKS: `GET path` with `:authority` over `cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    /// Envoy cluster (Istio: `outbound|443||idp.example.com`).
    pub cluster: String,
    pub authority: String,
    pub path: String,
    /// Regular refresh period.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Earliest re-fetch after the previous one, e.g. when a token names an unknown
    /// `kid` (key rotation), so forged `kid`s cannot turn into a fetch storm.
    #[serde(default = "default_min_refresh")]
    pub min_refresh_interval_seconds: u64,
}

/// How the keys are fetched, validated: the first request of each fetch and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFetch {
    pub cluster: String,
    pub authority: String,
    /// `remote`: the JWKS; `discovery`: the discovery document.
    pub path: String,
    pub refresh_seconds: u64,
    pub timeout_ms: u64,
    pub min_refresh_interval_seconds: u64,
    /// Set for `discovery`: the first answer is checked with it and names the JWKS.
    pub discovery: Option<Discovery>,
}

fn default_refresh() -> u64 {
    300
}

fn default_timeout() -> u64 {
    2000
}

fn default_min_refresh() -> u64 {
    10
}

/// The validated `auth` section.
#[derive(Debug)]
pub struct AuthConfig {
    /// Lowercase header name.
    pub header: String,
    /// Set when keys are fetched; the authenticator owns the fetched `KeySet`.
    pub remote: Option<KeyFetch>,
    /// Set when keys are inline.
    pub inline_keys: Option<KeySet>,
    pub algorithms: AlgorithmSet,
    pub cache_entries: usize,
    pub clock_skew_seconds: u64,
    rules: ClaimRules,
}

/// Validates `spec`; `field` is the path of the section in the plugin config (`auth`).
pub fn compile(spec: AuthSpec, field: &str) -> Result<AuthConfig, ConfigError> {
    let issuers = non_empty_list(spec.issuers, &format!("{field}.issuers"))?;
    let audiences = non_empty_list(spec.audiences, &format!("{field}.audiences"))?;
    if spec.clock_skew_seconds > MAX_CLOCK_SKEW_SECS {
        return Err(ConfigError::new(
            format!("{field}.clock_skew_seconds"),
            format!("must be at most {MAX_CLOCK_SKEW_SECS} seconds; fix the clocks rather than widen the window"),
        ));
    }
    let header = header_name(&spec.header, &format!("{field}.header"))?;
    let subject = claim_path(&spec.subject_claim, &format!("{field}.subject_claim"), &["sub", "jti"])?;
    let groups = match &spec.groups_claim {
        Some(name) => Some(claim_path(name, &format!("{field}.groups_claim"), &[])?),
        None => None,
    };
    let algorithms = algorithm_set(spec.algorithms.as_deref(), &format!("{field}.algorithms"))?;
    if !(1..=MAX_CACHE_ENTRIES).contains(&spec.cache_entries) {
        return Err(ConfigError::new(
            format!("{field}.cache_entries"),
            format!("must be between 1 and {MAX_CACHE_ENTRIES}"),
        ));
    }

    let (remote, inline_keys) = match spec.jwks {
        JwksSpec::Inline(doc) => {
            let inline_field = format!("{field}.jwks.inline");
            let keys = KeySet::from_inline(&doc).map_err(|e| {
                let path = e.path();
                let at = if path.is_empty() { inline_field.clone() } else { format!("{inline_field}.{path}") };
                ConfigError::new(at, e.problem())
            })?;
            if !keys.supports_any(algorithms) {
                return Err(ConfigError::new(
                    inline_field,
                    format!("no key can verify any of the allowed algorithms (`{field}.algorithms`)"),
                ));
            }
            (None, Some(keys))
        }
        JwksSpec::Remote(remote) => (Some(check_remote(remote, &format!("{field}.jwks.remote"))?), None),
        JwksSpec::Discovery(spec) => {
            let at = format!("{field}.jwks.discovery");
            let discovery = discovery::compile(&spec, &at, &issuers)?;
            let timing = Timing {
                refresh_seconds: spec.refresh_seconds,
                timeout_ms: spec.timeout_ms,
                min_refresh_interval_seconds: spec.min_refresh_interval_seconds,
            };
            let fetch = check_fetch(spec.cluster, spec.authority, discovery.path.clone(), timing, &at)?;
            (Some(KeyFetch { discovery: Some(discovery), ..fetch }), None)
        }
    };

    Ok(AuthConfig {
        header,
        remote,
        inline_keys,
        algorithms,
        cache_entries: spec.cache_entries,
        clock_skew_seconds: spec.clock_skew_seconds,
        rules: ClaimRules { issuers, audiences, skew_secs: spec.clock_skew_seconds, subject, groups },
    })
}

fn non_empty_list(values: Vec<String>, field: &str) -> Result<Vec<String>, ConfigError> {
    if values.is_empty() {
        return Err(ConfigError::new(field, "must list at least one value"));
    }
    if let Some(i) = values.iter().position(|v| v.is_empty()) {
        return Err(ConfigError::new(format!("{field}[{i}]"), "must not be empty"));
    }
    Ok(values)
}

fn header_name(name: &str, field: &str) -> Result<String, ConfigError> {
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token_char) {
        return Err(ConfigError::new(field, format!("`{name}` is not a valid HTTP header name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// `allowed_typed`: the registered claims jwt-simple types that may still be used here.
fn claim_path(name: &str, field: &str, allowed_typed: &[&str]) -> Result<ClaimPath, ConfigError> {
    let path = ClaimPath::parse(name).map_err(|problem| ConfigError::new(field, problem))?;
    if path.is_typed_claim() && !allowed_typed.contains(&name) {
        return Err(ConfigError::new(field, format!("the registered claim `{name}` cannot be used here")));
    }
    Ok(path)
}

fn algorithm_set(names: Option<&[String]>, field: &str) -> Result<AlgorithmSet, ConfigError> {
    let Some(names) = names else {
        return Ok(AlgorithmSet::all());
    };
    if names.is_empty() {
        return Err(ConfigError::new(field, "must list at least one algorithm (or be left out to allow all)"));
    }
    let mut set = AlgorithmSet::empty();
    for (i, name) in names.iter().enumerate() {
        if name.eq_ignore_ascii_case("none") {
            return Err(ConfigError::new(format!("{field}[{i}]"), "unsigned tokens (`none`) are never accepted"));
        }
        let alg = Algorithm::from_name(name).ok_or_else(|| {
            let supported: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
            ConfigError::new(
                format!("{field}[{i}]"),
                format!("`{name}` is not supported; use one of {}", supported.join(", ")),
            )
        })?;
        set.insert(alg);
    }
    Ok(set)
}

/// How often keys are fetched, as written in either fetching source.
struct Timing {
    refresh_seconds: u64,
    timeout_ms: u64,
    min_refresh_interval_seconds: u64,
}

fn check_remote(remote: RemoteJwks, field: &str) -> Result<KeyFetch, ConfigError> {
    if !remote.path.starts_with('/') || remote.path.contains([' ', '#']) {
        return Err(ConfigError::new(
            format!("{field}.path"),
            "must be an absolute path such as `/.well-known/jwks.json`",
        ));
    }
    let timing = Timing {
        refresh_seconds: remote.refresh_seconds,
        timeout_ms: remote.timeout_ms,
        min_refresh_interval_seconds: remote.min_refresh_interval_seconds,
    };
    check_fetch(remote.cluster, remote.authority, remote.path, timing, field)
}

fn check_fetch(
    cluster: String,
    authority: String,
    path: String,
    timing: Timing,
    field: &str,
) -> Result<KeyFetch, ConfigError> {
    if cluster.is_empty() {
        return Err(ConfigError::new(
            format!("{field}.cluster"),
            "must name the Envoy cluster of the identity provider",
        ));
    }
    if !discovery::is_authority(&authority) {
        return Err(ConfigError::new(format!("{field}.authority"), "must be a host name, optionally with `:port`"));
    }
    if !(1..=86_400).contains(&timing.refresh_seconds) {
        return Err(ConfigError::new(format!("{field}.refresh_seconds"), "must be between 1 and 86400"));
    }
    if !(1..=60_000).contains(&timing.timeout_ms) {
        return Err(ConfigError::new(format!("{field}.timeout_ms"), "must be between 1 and 60000"));
    }
    if timing.min_refresh_interval_seconds == 0 || timing.min_refresh_interval_seconds > timing.refresh_seconds {
        return Err(ConfigError::new(
            format!("{field}.min_refresh_interval_seconds"),
            "must be at least 1 and at most refresh_seconds",
        ));
    }
    Ok(KeyFetch {
        cluster,
        authority,
        path,
        refresh_seconds: timing.refresh_seconds,
        timeout_ms: timing.timeout_ms,
        min_refresh_interval_seconds: timing.min_refresh_interval_seconds,
        discovery: None,
    })
}
