//! Credential injection: the agent's token never reaches the upstream; the upstream's
//! own credential is added by the filter, so no agent or engineer holds the service secret.
//!
//! Upstreams are named by their Envoy cluster, the one thing that identifies "the service
//! behind this route" in both plain Envoy and Istio (`outbound|8080||db.svc.cluster.local`).
//! Static header values are built once at config load; the hot path only copies them.
//! A secret may also be held by the control service (`{"control": NAME}`, see `control`),
//! which makes it rotatable without a reload, and `signed_request` mints a token per
//! request (see `signed`). `oauth2_client_credentials` fetches an access token from a
//! token endpoint and caches it (see `oauth`); `token_exchange` exchanges the agent's own
//! token for one made for the upstream (see `exchange`).

pub mod control;
pub mod exchange;
pub mod oauth;
mod shared;
pub mod signed;
pub mod token_endpoint;

use std::fmt;

use airlock_wire::CredentialUse;
use base64::Engine as _;
use serde::Deserialize;

use crate::config_error::ConfigError;
use exchange::{ExchangeSpec, TokenExchange, ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE};
use oauth::{ClientSpec, OAuthClient};
use signed::{RequestSigner, SigningAlg};
use token_endpoint::{AuthSpec, TokenEndpoint};

/// A value that must never be printed: `Debug` shows only its length. Also the control
/// service's type for the secrets in its own config (deserialized from a plain string).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// A secret given inline, by the name of an environment variable that Envoy passes to the
/// VM (`vm_config.environment_variables.host_env_keys`), or by its name in the control
/// service, fetched and refreshed every `ttl_seconds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    value: Option<String>,
    env: Option<String>,
    control: Option<String>,
    ttl_seconds: Option<u64>,
}

fn default_lifetime_s() -> u64 {
    30
}

fn default_signed_header() -> String {
    "authorization".into()
}

fn default_token_timeout_ms() -> u64 {
    2000
}

/// `private_key_jwt` (RFC 7523 §2.2): the key that signs the client's assertions.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionSpec {
    key: SecretSpec,
    key_id: String,
    /// A string, checked here, like `signed_request`'s.
    alg: String,
    /// The assertion's `aud`; by default `https://{authority}{path}` of the endpoint.
    audience: Option<String>,
}

/// How long a client assertion lives: it is sent at once.
const ASSERTION_LIFETIME_S: u64 = 60;

/// The token endpoint, reached through an Envoy cluster.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEndpointSpec {
    cluster: String,
    authority: String,
    path: String,
    #[serde(default = "default_token_timeout_ms")]
    timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum CredentialSpec {
    Bearer {
        token: SecretSpec,
    },
    Basic {
        username: String,
        password: SecretSpec,
    },
    Header {
        name: String,
        value: SecretSpec,
    },
    SignedRequest {
        key: SecretSpec,
        key_id: String,
        /// A string, checked here: inside a tagged enum serde could not name the field.
        alg: String,
        issuer: String,
        audience: String,
        #[serde(default = "default_lifetime_s")]
        lifetime_s: u64,
        #[serde(default = "default_signed_header")]
        header: String,
    },
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials(OAuthSpec),
    TokenExchange(TokenExchangeSpec),
}

/// `token_exchange`: the client the filter is at the token endpoint, and what it asks for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeSpec {
    token_endpoint: TokenEndpointSpec,
    client_id: String,
    client_secret: Option<SecretSpec>,
    private_key_jwt: Option<AssertionSpec>,
    audience: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
    requested_token_type: Option<String>,
    subject_token_type: Option<String>,
    refresh_before_seconds: Option<u64>,
    cache_entries: Option<usize>,
}

/// Exchanged tokens cached per upstream unless `cache_entries` says otherwise.
const DEFAULT_EXCHANGE_CACHE_ENTRIES: usize = 1024;
/// Bounds of `cache_entries`: a token is ~1 KB, so the upper bound is ~100 MB per worker.
const EXCHANGE_CACHE_ENTRIES: std::ops::RangeInclusive<usize> = 1..=100_000;

/// `oauth2_client_credentials`: the client the filter is at the token endpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSpec {
    token_endpoint: TokenEndpointSpec,
    client_id: String,
    /// `client_secret_basic`; or `private_key_jwt`.
    client_secret: Option<SecretSpec>,
    private_key_jwt: Option<AssertionSpec>,
    scope: Option<String>,
    audience: Option<String>,
    refresh_before_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Envoy cluster name the route sends to.
    cluster: String,
    credential: CredentialSpec,
}

/// The longest a minted token may live: it is bound to one request, which is sent now.
pub const MAX_SIGNED_LIFETIME_S: u64 = 60;
/// Bounds of `ttl_seconds` of a control-service secret.
const CONTROL_TTL_S: std::ops::RangeInclusive<u64> = 5..=86_400;
const DEFAULT_CONTROL_TTL_S: u64 = 300;

/// How a static kind turns its secret into the header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Bearer,
    Basic { username: String },
    Raw,
}

impl Format {
    pub fn header_value(&self, secret: &str) -> Secret {
        match self {
            Format::Bearer => Secret(format!("Bearer {secret}")),
            Format::Basic { username } => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{secret}"));
                Secret(format!("Basic {encoded}"))
            }
            Format::Raw => Secret(secret.to_string()),
        }
    }
}

/// Where a credential's header value comes from.
pub enum Source {
    /// Built at load.
    Fixed(Secret),
    /// The control service's secret (index into [`Upstreams::control_secrets`]),
    /// formatted when used.
    Control { secret: usize, format: Format },
    /// Minted per request; with `bearer`, carried as `Bearer <jwt>`.
    Signed { signer: Box<RequestSigner>, bearer: bool },
    /// An access token from a token endpoint (index into [`Upstreams::oauth_clients`]).
    OAuth { client: usize },
    /// The agent's token exchanged for one for this upstream (index into
    /// [`Upstreams::token_exchanges`]).
    Exchange { exchange: usize },
}

/// The header carrying an upstream's credential, and where its value comes from.
pub struct Credential {
    pub header: String,
    pub source: Source,
    /// The kind the audit record names (`bearer`, `basic`, `header`, `signed_request`,
    /// `oauth2_client_credentials`, `token_exchange`).
    kind: &'static str,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({} in `{}`)", self.kind, self.header)
    }
}

impl Credential {
    /// What the audit record says was used: the kind, and the signing key's id or the
    /// control service's name of the secret. Never a value.
    pub fn used<'a>(&'a self, upstreams: &'a Upstreams) -> CredentialUse<'a> {
        let key_id = match &self.source {
            Source::Fixed(_) => None,
            Source::Control { secret, .. } => upstreams.control_secrets.get(*secret).map(|s| s.name.as_str()),
            Source::Signed { signer, .. } => Some(signer.key_id()),
            Source::OAuth { client } => upstreams.oauth_clients.get(*client).map(|c| c.endpoint.client_id.as_str()),
            Source::Exchange { exchange } => {
                upstreams.token_exchanges.get(*exchange).map(|e| e.endpoint.client_id.as_str())
            }
        };
        CredentialUse { kind: self.kind.into(), key_id: key_id.map(Into::into) }
    }

    /// A minted token needs the request body (it is bound to it).
    pub fn binds_body(&self) -> bool {
        matches!(self.source, Source::Signed { .. })
    }
}

/// A secret the control service holds, by its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSecret {
    pub name: String,
    /// How long a fetched value is used before it is fetched again.
    pub ttl_ms: u64,
}

#[derive(Debug, Default)]
pub struct Upstreams {
    by_cluster: Vec<(String, Credential)>,
    /// Every `{"control": ...}` secret, once each.
    pub control_secrets: Vec<ControlSecret>,
    /// The clients of every `oauth2_client_credentials` upstream, one each.
    pub oauth_clients: Vec<OAuthClient>,
    /// The exchanges of every `token_exchange` upstream, one each.
    pub token_exchanges: Vec<TokenExchange>,
}

impl Upstreams {
    pub fn credential_for(&self, cluster: &str) -> Option<&Credential> {
        self.find(cluster).and_then(|i| self.at(i))
    }

    /// The index of `cluster`'s credential: what a request's record keeps.
    pub fn find(&self, cluster: &str) -> Option<usize> {
        self.by_cluster.iter().position(|(c, _)| c == cluster)
    }

    pub fn at(&self, index: usize) -> Option<&Credential> {
        self.by_cluster.get(index).map(|(_, cred)| cred)
    }

    pub fn is_empty(&self) -> bool {
        self.by_cluster.is_empty()
    }

    /// Header names any upstream credential is carried in; these are always removed from
    /// client requests so a client cannot smuggle its own copy past the filter.
    pub fn credential_headers(&self) -> impl Iterator<Item = &str> {
        self.by_cluster.iter().map(|(_, c)| c.header.as_str())
    }

    /// The first upstream (by index) whose credential is minted per request.
    pub fn first_signed(&self) -> Option<usize> {
        self.by_cluster.iter().position(|(_, c)| c.binds_body())
    }

    /// The first upstream (by index) whose credential is exchanged per caller.
    pub fn first_exchanged(&self) -> Option<usize> {
        self.by_cluster.iter().position(|(_, c)| matches!(c.source, Source::Exchange { .. }))
    }
}

/// Reads an environment variable; a seam so tests do not depend on the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where a secret is, once its spec is checked.
enum Resolved {
    Now(Secret),
    Control { name: String, ttl_ms: u64 },
}

fn resolve_source(spec: SecretSpec, field: &str, env: EnvLookup) -> Result<Resolved, ConfigError> {
    if spec.ttl_seconds.is_some() && spec.control.is_none() {
        return Err(ConfigError::new(format!("{field}.ttl_seconds"), "only a `control` secret is refreshed"));
    }
    let value = match (spec.value, spec.env, spec.control) {
        (Some(v), None, None) => v,
        (None, Some(name), None) => env(&name).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.env"),
                format!(
                    "environment variable `{name}` is not set in the Wasm VM \
                     (list it in vm_config.environment_variables.host_env_keys)"
                ),
            )
        })?,
        (None, None, Some(name)) => {
            if !valid_secret_name(&name) {
                return Err(ConfigError::new(
                    format!("{field}.control"),
                    "secret names are 1 to 128 of a-z, A-Z, 0-9, `_`, `-` and `.`",
                ));
            }
            let ttl_s = spec.ttl_seconds.unwrap_or(DEFAULT_CONTROL_TTL_S);
            if !CONTROL_TTL_S.contains(&ttl_s) {
                return Err(ConfigError::new(
                    format!("{field}.ttl_seconds"),
                    format!("must be between {} and {}", CONTROL_TTL_S.start(), CONTROL_TTL_S.end()),
                ));
            }
            return Ok(Resolved::Control { name, ttl_ms: ttl_s * 1000 });
        }
        _ => {
            return Err(ConfigError::new(field, "give exactly one of `value`, `env` or `control`"));
        }
    };
    if value.is_empty() {
        return Err(ConfigError::new(field, "the secret is empty"));
    }
    Ok(Resolved::Now(Secret(value)))
}

/// A name the service can serve under `/v1/secrets/{name}` and a stat or shared-data
/// key can carry.
pub fn valid_secret_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Why a secret cannot go in a header, if it cannot.
pub fn header_safe(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("the secret is empty");
    }
    if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("the secret contains control characters, which cannot go in a header");
    }
    Ok(())
}

/// Resolves a secret that must be known at load (inline or from the environment):
/// `what` says why a control-service secret does not do here.
pub fn resolve_now(spec: SecretSpec, field: &str, env: EnvLookup, what: &str) -> Result<Secret, ConfigError> {
    match resolve_source(spec, field, env)? {
        Resolved::Now(secret) => Ok(secret),
        Resolved::Control { .. } => Err(ConfigError::new(format!("{field}.control"), what)),
    }
}

/// Resolves an inline or environment secret that goes in a header, refusing empty values
/// and control characters.
pub fn resolve(spec: SecretSpec, field: &str, env: EnvLookup) -> Result<Secret, ConfigError> {
    let secret = resolve_now(spec, field, env, "this secret is needed to reach the control service itself")?;
    header_safe(secret.expose()).map_err(|problem| ConfigError::new(field, problem))?;
    Ok(secret)
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Builds what a static kind injects: its value now, or its control-service secret.
fn static_source(
    spec: SecretSpec,
    format: Format,
    field: &str,
    env: EnvLookup,
    control_secrets: &mut Vec<ControlSecret>,
) -> Result<Source, ConfigError> {
    match resolve_source(spec, field, env)? {
        Resolved::Now(secret) => {
            header_safe(secret.expose()).map_err(|problem| ConfigError::new(field, problem))?;
            Ok(Source::Fixed(format.header_value(secret.expose())))
        }
        Resolved::Control { name, ttl_ms } => {
            // One fetch per name: two upstreams sharing a secret share its refreshes, at
            // the shorter TTL.
            let secret = match control_secrets.iter().position(|s| s.name == name) {
                Some(i) => i,
                None => {
                    control_secrets.push(ControlSecret { name, ttl_ms });
                    control_secrets.len() - 1
                }
            };
            if let Some(known) = control_secrets.get_mut(secret) {
                known.ttl_ms = known.ttl_ms.min(ttl_ms);
            }
            Ok(Source::Control { secret, format })
        }
    }
}

fn nonempty(value: String, field: &str) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    Ok(value)
}

/// What an upstream's credential adds to the config beyond its own entry.
struct Collected<'a> {
    control_secrets: &'a mut Vec<ControlSecret>,
    oauth_clients: &'a mut Vec<OAuthClient>,
    token_exchanges: &'a mut Vec<TokenExchange>,
}

/// Bounds of `token_endpoint.timeout_ms`.
const TOKEN_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// Bounds of `refresh_before_seconds`.
const REFRESH_BEFORE_S: std::ops::RangeInclusive<u64> = 1..=3600;

/// The token endpoint and the filter's client there, checked by field.
fn token_endpoint(
    token_endpoint: TokenEndpointSpec,
    client_id: String,
    client_secret: Option<SecretSpec>,
    private_key_jwt: Option<AssertionSpec>,
    field: &str,
    env: EnvLookup,
) -> Result<TokenEndpoint, ConfigError> {
    let endpoint = format!("{field}.token_endpoint");
    let cluster = nonempty(token_endpoint.cluster, &format!("{endpoint}.cluster"))?;
    let authority = nonempty(token_endpoint.authority, &format!("{endpoint}.authority"))?;
    if !token_endpoint.path.starts_with('/') || token_endpoint.path.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return Err(ConfigError::new(format!("{endpoint}.path"), "must start with `/` and hold no spaces"));
    }
    if !TOKEN_TIMEOUT_MS.contains(&token_endpoint.timeout_ms) {
        return Err(ConfigError::new(
            format!("{endpoint}.timeout_ms"),
            format!("must be between {} and {}", TOKEN_TIMEOUT_MS.start(), TOKEN_TIMEOUT_MS.end()),
        ));
    }
    let client_id = nonempty(client_id, &format!("{field}.client_id"))?;
    let auth = match (client_secret, private_key_jwt) {
        (Some(secret), None) => AuthSpec::Secret(resolve_now(
            secret,
            &format!("{field}.client_secret"),
            env,
            "the client secret is needed at load; give it by `env` or `value`",
        )?),
        (None, Some(assertion)) => {
            let here = format!("{field}.private_key_jwt");
            let default_audience = format!("https://{authority}{}", token_endpoint.path);
            let audience = nonempty(assertion.audience.unwrap_or(default_audience), &format!("{here}.audience"))?;
            let key = KeySpec { key: assertion.key, key_id: assertion.key_id, alg: assertion.alg };
            let signer = signer_for(key, &here, env, (client_id.clone(), audience, ASSERTION_LIFETIME_S))?;
            AuthSpec::Assertion(Box::new(signer))
        }
        _ => return Err(ConfigError::new(field, "give exactly one of `client_secret` or `private_key_jwt`")),
    };
    Ok(TokenEndpoint::new(client_id, auth, cluster, authority, token_endpoint.path)
        .with_timeout_ms(token_endpoint.timeout_ms))
}

/// Optional form parameters: left out, or not empty.
fn optional_params(params: &[(&str, &Option<String>)], field: &str) -> Result<(), ConfigError> {
    for (name, value) in params {
        if value.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new(format!("{field}.{name}"), "must not be empty (leave it out instead)"));
        }
    }
    Ok(())
}

fn refresh_before(refresh_before_seconds: Option<u64>, field: &str) -> Result<Option<u64>, ConfigError> {
    if let Some(before) = refresh_before_seconds {
        if !REFRESH_BEFORE_S.contains(&before) {
            return Err(ConfigError::new(
                format!("{field}.refresh_before_seconds"),
                format!("must be between {} and {}", REFRESH_BEFORE_S.start(), REFRESH_BEFORE_S.end()),
            ));
        }
    }
    Ok(refresh_before_seconds)
}

fn oauth_client(spec: OAuthSpec, upstream: &str, field: &str, env: EnvLookup) -> Result<OAuthClient, ConfigError> {
    let OAuthSpec {
        token_endpoint: endpoint,
        client_id,
        client_secret,
        private_key_jwt,
        scope,
        audience,
        refresh_before_seconds,
    } = spec;
    let endpoint = token_endpoint(endpoint, client_id, client_secret, private_key_jwt, field, env)?;
    optional_params(&[("scope", &scope), ("audience", &audience)], field)?;
    let refresh_before_seconds = refresh_before(refresh_before_seconds, field)?;
    Ok(OAuthClient::new(ClientSpec {
        upstream: upstream.to_string(),
        endpoint,
        scope,
        audience,
        refresh_before_seconds,
    }))
}

/// An RFC 8693 token type: a URI (RFC 8693 §3 names them `urn:ietf:params:oauth:token-type:...`).
fn token_type(value: Option<String>, default: &str, field: &str) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_string());
    if !value.contains(':') || value.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(ConfigError::new(field, "must be a token type URI, e.g. `urn:ietf:params:oauth:token-type:jwt`"));
    }
    Ok(value)
}

fn token_exchange(
    spec: TokenExchangeSpec,
    upstream: &str,
    field: &str,
    env: EnvLookup,
) -> Result<TokenExchange, ConfigError> {
    let TokenExchangeSpec {
        token_endpoint: endpoint,
        client_id,
        client_secret,
        private_key_jwt,
        audience,
        resource,
        scope,
        requested_token_type,
        subject_token_type,
        refresh_before_seconds,
        cache_entries,
    } = spec;
    let endpoint = token_endpoint(endpoint, client_id, client_secret, private_key_jwt, field, env)?;
    optional_params(&[("audience", &audience), ("resource", &resource), ("scope", &scope)], field)?;
    if audience.is_none() && resource.is_none() {
        return Err(ConfigError::new(
            format!("{field}.audience"),
            "name the upstream the token is for, by `audience` or `resource` (RFC 8693 §2.1)",
        ));
    }
    let requested_token_type =
        token_type(requested_token_type, ACCESS_TOKEN_TYPE, &format!("{field}.requested_token_type"))?;
    let subject_token_type = token_type(subject_token_type, JWT_TOKEN_TYPE, &format!("{field}.subject_token_type"))?;
    let cache_entries = cache_entries.unwrap_or(DEFAULT_EXCHANGE_CACHE_ENTRIES);
    if !EXCHANGE_CACHE_ENTRIES.contains(&cache_entries) {
        return Err(ConfigError::new(
            format!("{field}.cache_entries"),
            format!("must be between {} and {}", EXCHANGE_CACHE_ENTRIES.start(), EXCHANGE_CACHE_ENTRIES.end()),
        ));
    }
    Ok(TokenExchange::new(ExchangeSpec {
        upstream: upstream.to_string(),
        endpoint,
        audience,
        resource,
        scope,
        requested_token_type,
        subject_token_type,
        refresh_before_seconds: refresh_before(refresh_before_seconds, field)?,
        cache_entries,
    }))
}

/// A signing key as `signed_request` and `private_key_jwt` give it.
struct KeySpec {
    key: SecretSpec,
    key_id: String,
    alg: String,
}

/// The signer of `key` (errors at `{field}.key`, `.key_id`, `.alg`) minting tokens with
/// `(issuer, audience, lifetime_s)`.
fn signer_for(
    spec: KeySpec,
    field: &str,
    env: EnvLookup,
    (issuer, audience, lifetime_s): (String, String, u64),
) -> Result<RequestSigner, ConfigError> {
    let KeySpec { key, key_id, alg } = spec;
    let alg = SigningAlg::named(&alg)
        .ok_or_else(|| ConfigError::new(format!("{field}.alg"), format!("`{alg}` is not one of ES256, EdDSA")))?;
    let key_field = format!("{field}.key");
    let pem = resolve_now(
        key,
        &key_field,
        env,
        "a signing key is parsed at load; give it by `env` (rotate keys with `key_id`, see the README)",
    )?;
    if key_id.is_empty() || key_id.len() > 128 || !key_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(format!("{field}.key_id"), "must be 1 to 128 printable ASCII characters"));
    }
    RequestSigner::new(alg, &pem, key_id, issuer, audience, lifetime_s)
        .map_err(|problem| ConfigError::new(&key_field, problem))
}

fn compile_credential(
    spec: CredentialSpec,
    upstream: &str,
    field: &str,
    env: EnvLookup,
    collected: &mut Collected,
) -> Result<Credential, ConfigError> {
    let control_secrets = &mut *collected.control_secrets;
    Ok(match spec {
        CredentialSpec::OAuth2ClientCredentials(spec) => {
            let client = oauth_client(spec, upstream, field, env)?;
            collected.oauth_clients.push(client);
            let source = Source::OAuth { client: collected.oauth_clients.len() - 1 };
            Credential { header: "authorization".into(), source, kind: "oauth2_client_credentials" }
        }
        CredentialSpec::TokenExchange(spec) => {
            let exchange = token_exchange(spec, upstream, field, env)?;
            collected.token_exchanges.push(exchange);
            let source = Source::Exchange { exchange: collected.token_exchanges.len() - 1 };
            Credential { header: "authorization".into(), source, kind: "token_exchange" }
        }
        CredentialSpec::Bearer { token } => {
            let source = static_source(token, Format::Bearer, &format!("{field}.token"), env, control_secrets)?;
            Credential { header: "authorization".into(), source, kind: "bearer" }
        }
        CredentialSpec::Basic { username, password } => {
            if username.contains(':') {
                return Err(ConfigError::new(format!("{field}.username"), "a basic-auth username cannot contain `:`"));
            }
            let format = Format::Basic { username };
            let source = static_source(password, format, &format!("{field}.password"), env, control_secrets)?;
            Credential { header: "authorization".into(), source, kind: "basic" }
        }
        CredentialSpec::Header { name, value } => {
            if !valid_header_name(&name) || name.starts_with(':') {
                return Err(ConfigError::new(format!("{field}.name"), "not a valid HTTP header name"));
            }
            let source = static_source(value, Format::Raw, &format!("{field}.value"), env, control_secrets)?;
            Credential { header: name.to_ascii_lowercase(), source, kind: "header" }
        }
        CredentialSpec::SignedRequest { key, key_id, alg, issuer, audience, lifetime_s, header } => {
            let issuer = nonempty(issuer, &format!("{field}.issuer"))?;
            let audience = nonempty(audience, &format!("{field}.audience"))?;
            if !(1..=MAX_SIGNED_LIFETIME_S).contains(&lifetime_s) {
                return Err(ConfigError::new(
                    format!("{field}.lifetime_s"),
                    format!("must be between 1 and {MAX_SIGNED_LIFETIME_S} seconds"),
                ));
            }
            let header = header.to_ascii_lowercase();
            if !valid_header_name(&header) {
                return Err(ConfigError::new(format!("{field}.header"), "not a valid HTTP header name"));
            }
            let signer = signer_for(KeySpec { key, key_id, alg }, field, env, (issuer, audience, lifetime_s))?;
            let bearer = header == "authorization";
            Credential { header, source: Source::Signed { signer: Box::new(signer), bearer }, kind: "signed_request" }
        }
    })
}

pub fn compile(specs: Vec<UpstreamSpec>, field: &str, env: EnvLookup) -> Result<Upstreams, ConfigError> {
    let mut by_cluster: Vec<(String, Credential)> = Vec::with_capacity(specs.len());
    let mut control_secrets = Vec::new();
    let mut oauth_clients = Vec::new();
    let mut token_exchanges = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let here = format!("{field}[{i}]");
        if spec.cluster.is_empty() {
            return Err(ConfigError::new(format!("{here}.cluster"), "cluster name is empty"));
        }
        if by_cluster.iter().any(|(c, _)| *c == spec.cluster) {
            return Err(ConfigError::new(
                format!("{here}.cluster"),
                format!("cluster `{}` is listed twice", spec.cluster),
            ));
        }
        let mut collected = Collected {
            control_secrets: &mut control_secrets,
            oauth_clients: &mut oauth_clients,
            token_exchanges: &mut token_exchanges,
        };
        let field = format!("{here}.credential");
        let credential = compile_credential(spec.credential, &spec.cluster, &field, env, &mut collected)?;
        by_cluster.push((spec.cluster, credential));
    }
    Ok(Upstreams { by_cluster, control_secrets, oauth_clients, token_exchanges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_json(json: &str, env: EnvLookup) -> Result<Upstreams, ConfigError> {
        compile(serde_json::from_str(json).unwrap(), "upstreams", env)
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn fixed(c: &Credential) -> &str {
        match &c.source {
            Source::Fixed(value) => value.expose(),
            _ => panic!("{c:?} is not fixed at load"),
        }
    }

    #[test]
    fn bearer_credential_becomes_authorization_header() {
        let u =
            compile_json(r#"[{"cluster":"db","credential":{"type":"bearer","token":{"value":"s3cr3t"}}}]"#, &no_env)
                .unwrap();
        let c = u.credential_for("db").unwrap();
        assert_eq!(c.header, "authorization");
        assert_eq!(fixed(c), "Bearer s3cr3t");
        assert!(u.credential_for("other").is_none());
    }

    #[test]
    fn basic_credential_is_base64_of_user_and_password() {
        let u = compile_json(
            r#"[{"cluster":"db","credential":{"type":"basic","username":"svc","password":{"value":"pw"}}}]"#,
            &no_env,
        )
        .unwrap();
        assert_eq!(fixed(u.credential_for("db").unwrap()), "Basic c3ZjOnB3");
    }

    #[test]
    fn header_credential_reads_environment_variable() {
        let env = |name: &str| (name == "DB_KEY").then(|| "from-env".to_string());
        let u = compile_json(
            r#"[{"cluster":"db","credential":{"type":"header","name":"X-Api-Key","value":{"env":"DB_KEY"}}}]"#,
            &env,
        )
        .unwrap();
        let c = u.credential_for("db").unwrap();
        assert_eq!((c.header.as_str(), fixed(c)), ("x-api-key", "from-env"));
    }

    #[test]
    fn missing_environment_variable_names_field_but_not_a_value() {
        let err = compile_json(r#"[{"cluster":"db","credential":{"type":"bearer","token":{"env":"NOPE"}}}]"#, &no_env)
            .unwrap_err();
        assert_eq!(err.field, "upstreams[0].credential.token.env");
        assert!(err.problem.contains("NOPE"));
    }

    #[test]
    fn secret_debug_output_never_shows_the_value() {
        let u =
            compile_json(r#"[{"cluster":"db","credential":{"type":"bearer","token":{"value":"hunter2"}}}]"#, &no_env)
                .unwrap();
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn rejects_duplicate_cluster_and_bad_header_name() {
        let dup = concat!(
            r#"[{"cluster":"a","credential":{"type":"bearer","token":{"value":"x"}}},{"cluster":"a","#,
            r#""credential":{"type":"bearer","token":{"value":"y"}}}]"#
        );
        assert_eq!(compile_json(dup, &no_env).unwrap_err().field, "upstreams[1].cluster");
        let bad = r#"[{"cluster":"a","credential":{"type":"header","name":"x key","value":{"value":"y"}}}]"#;
        assert_eq!(compile_json(bad, &no_env).unwrap_err().field, "upstreams[0].credential.name");
    }

    /// An `oauth2_client_credentials` upstream with `secret` and `extra` settings.
    fn oauth(secret: &str, extra: &str) -> String {
        format!(
            r#"[{{"cluster":"db","credential":{{"type":"oauth2_client_credentials","client_id":"airlock",
            "token_endpoint":{{"cluster":"idp","authority":"idp","path":"/oauth/token"}},
            "client_secret":{secret}{extra}}}}}]"#
        )
    }

    #[test]
    fn an_oauth_client_is_collected_once_and_its_settings_are_checked_by_field() {
        let u = compile_json(&oauth(r#"{"value":"s3cr3t"}"#, r#","scope":"read""#), &no_env).unwrap();
        let c = u.credential_for("db").unwrap();
        assert!(matches!(c.source, Source::OAuth { client: 0 }) && c.header == "authorization");
        let used = CredentialUse { kind: "oauth2_client_credentials".into(), key_id: Some("airlock".into()) };
        assert_eq!(c.used(&u), used);
        assert!(!format!("{u:?}").contains("s3cr3t"));
        for (secret, extra, field) in [
            (r#"{"value":"s"}"#, r#","scope":"""#, "upstreams[0].credential.scope"),
            (r#"{"value":"s"}"#, r#","refresh_before_seconds":0"#, "upstreams[0].credential.refresh_before_seconds"),
            (r#"{"control":"x"}"#, "", "upstreams[0].credential.client_secret.control"),
            (r#"{"env":"NOPE"}"#, "", "upstreams[0].credential.client_secret.env"),
        ] {
            let json = oauth(secret, extra);
            assert_eq!(compile_json(&json, &no_env).unwrap_err().field, field, "{json}");
        }
        let bad_path = oauth(r#"{"value":"s"}"#, "").replace("/oauth/token", "oauth token");
        assert_eq!(compile_json(&bad_path, &no_env).unwrap_err().field, "upstreams[0].credential.token_endpoint.path");
    }

    #[test]
    fn rejects_secret_with_newline_that_would_split_headers() {
        let err =
            compile_json(r#"[{"cluster":"a","credential":{"type":"bearer","token":{"value":"x\r\ny: z"}}}]"#, &no_env)
                .unwrap_err();
        assert_eq!(err.field, "upstreams[0].credential.token");
    }
}
