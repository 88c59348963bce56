//! Credential injection: the agent's token never reaches the upstream; the upstream's
//! own credential is added by the filter, so no agent or engineer holds the service secret.
//!
//! Upstreams are named by their Envoy cluster, the one thing that identifies "the service
//! behind this route" in both plain Envoy and Istio (`outbound|8080||db.svc.cluster.local`).
//! Header values are built once at config load; the hot path only copies them.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::config_error::ConfigError;

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

/// A secret given inline or, better, by the name of an environment variable that Envoy
/// passes to the VM (`vm_config.environment_variables.host_env_keys`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    value: Option<String>,
    env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum CredentialSpec {
    Bearer { token: SecretSpec },
    Basic { username: String, password: SecretSpec },
    Header { name: String, value: SecretSpec },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Envoy cluster name the route sends to.
    cluster: String,
    credential: CredentialSpec,
}

/// A ready-to-set header carrying the upstream's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub header: String,
    pub value: Secret,
}

#[derive(Debug, Default)]
pub struct Upstreams {
    by_cluster: Vec<(String, Credential)>,
}

impl Upstreams {
    pub fn credential_for(&self, cluster: &str) -> Option<&Credential> {
        self.by_cluster.iter().find(|(c, _)| c == cluster).map(|(_, cred)| cred)
    }

    pub fn is_empty(&self) -> bool {
        self.by_cluster.is_empty()
    }

    /// Header names any upstream credential is carried in; these are always removed from
    /// client requests so a client cannot smuggle its own copy past the filter.
    pub fn credential_headers(&self) -> impl Iterator<Item = &str> {
        self.by_cluster.iter().map(|(_, c)| c.header.as_str())
    }
}

/// Reads an environment variable; a seam so tests do not depend on the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Resolves an inline or environment secret, refusing empty values and control characters.
pub fn resolve(spec: SecretSpec, field: &str, env: EnvLookup) -> Result<Secret, ConfigError> {
    let value = match (spec.value, spec.env) {
        (Some(v), None) => v,
        (None, Some(name)) => env(&name).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.env"),
                format!(
                    "environment variable `{name}` is not set in the Wasm VM \
                     (list it in vm_config.environment_variables.host_env_keys)"
                ),
            )
        })?,
        _ => {
            return Err(ConfigError::new(field, "give exactly one of `value` or `env`"));
        }
    };
    if value.is_empty() {
        return Err(ConfigError::new(field, "the secret is empty"));
    }
    if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(ConfigError::new(field, "the secret contains control characters, which cannot go in a header"));
    }
    Ok(Secret(value))
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn compile_credential(spec: CredentialSpec, field: &str, env: EnvLookup) -> Result<Credential, ConfigError> {
    Ok(match spec {
        CredentialSpec::Bearer { token } => {
            let token = resolve(token, &format!("{field}.token"), env)?;
            Credential { header: "authorization".into(), value: Secret(format!("Bearer {}", token.0)) }
        }
        CredentialSpec::Basic { username, password } => {
            if username.contains(':') {
                return Err(ConfigError::new(format!("{field}.username"), "a basic-auth username cannot contain `:`"));
            }
            let password = resolve(password, &format!("{field}.password"), env)?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.0));
            Credential { header: "authorization".into(), value: Secret(format!("Basic {encoded}")) }
        }
        CredentialSpec::Header { name, value } => {
            if !valid_header_name(&name) || name.starts_with(':') {
                return Err(ConfigError::new(format!("{field}.name"), "not a valid HTTP header name"));
            }
            let value = resolve(value, &format!("{field}.value"), env)?;
            Credential { header: name.to_ascii_lowercase(), value }
        }
    })
}

pub fn compile(specs: Vec<UpstreamSpec>, field: &str, env: EnvLookup) -> Result<Upstreams, ConfigError> {
    let mut by_cluster: Vec<(String, Credential)> = Vec::with_capacity(specs.len());
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
        let credential = compile_credential(spec.credential, &format!("{here}.credential"), env)?;
        by_cluster.push((spec.cluster, credential));
    }
    Ok(Upstreams { by_cluster })
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

    #[test]
    fn bearer_credential_becomes_authorization_header() {
        let u =
            compile_json(r#"[{"cluster":"db","credential":{"type":"bearer","token":{"value":"s3cr3t"}}}]"#, &no_env)
                .unwrap();
        let c = u.credential_for("db").unwrap();
        assert_eq!(c.header, "authorization");
        assert_eq!(c.value.expose(), "Bearer s3cr3t");
        assert!(u.credential_for("other").is_none());
    }

    #[test]
    fn basic_credential_is_base64_of_user_and_password() {
        let u = compile_json(
            r#"[{"cluster":"db","credential":{"type":"basic","username":"svc","password":{"value":"pw"}}}]"#,
            &no_env,
        )
        .unwrap();
        assert_eq!(u.credential_for("db").unwrap().value.expose(), "Basic c3ZjOnB3");
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
        assert_eq!((c.header.as_str(), c.value.expose()), ("x-api-key", "from-env"));
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

    #[test]
    fn rejects_secret_with_newline_that_would_split_headers() {
        let err =
            compile_json(r#"[{"cluster":"a","credential":{"type":"bearer","token":{"value":"x\r\ny: z"}}}]"#, &no_env)
                .unwrap_err();
        assert_eq!(err.field, "upstreams[0].credential.token");
    }
}
