//! The service config file (`--config`, TOML or JSON by extension): approvers and their
//! token hashes, alert sinks, and the public URL used in links. Secrets (webhook URLs,
//! routing keys) may be `${ENV_VAR}` references, resolved at load and never logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use airlock_filter::credentials::Secret;
use serde::Deserialize;

use crate::auth::oidc::OidcConfig;
use crate::auth::{validate_approvers, ApproverEntry};
use crate::config_error::ConfigError;
use crate::credentials::{published_jwks, SecretStore, SigningKeyConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// An approval was requested and waits for a decision.
    ApprovalPending,
    /// The filter denied a request (seen in the audit stream).
    RequestDenied,
    /// A filter saw an MCP tool's definition differ from its pin.
    ToolDefinitionChanged,
}

fn all_events() -> Vec<AlertEvent> {
    vec![AlertEvent::ApprovalPending, AlertEvent::RequestDenied, AlertEvent::ToolDefinitionChanged]
}

fn default_severity() -> String {
    "warning".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Slack-compatible incoming webhook (Block Kit message with a review link).
    Slack {
        url: Secret,
        #[serde(default = "all_events")]
        events: Vec<AlertEvent>,
        /// Adds Approve / Deny buttons to pending-approval messages; needs `[slack]`
        /// (the signing secret that authenticates the clicks).
        #[serde(default)]
        interactive: bool,
    },
    /// Generic JSON webhook.
    Webhook {
        url: Secret,
        #[serde(default = "all_events")]
        events: Vec<AlertEvent>,
    },
    /// PagerDuty Events API v2.
    Pagerduty {
        routing_key: Secret,
        /// Defaults to PagerDuty's public enqueue endpoint.
        #[serde(default)]
        url: Option<Secret>,
        #[serde(default = "default_severity")]
        severity: String,
        #[serde(default = "all_events")]
        events: Vec<AlertEvent>,
    },
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Slack { .. } => "slack",
            SinkConfig::Webhook { .. } => "webhook",
            SinkConfig::Pagerduty { .. } => "pagerduty",
        }
    }

    pub fn events(&self) -> &[AlertEvent] {
        match self {
            SinkConfig::Slack { events, .. }
            | SinkConfig::Webhook { events, .. }
            | SinkConfig::Pagerduty { events, .. } => events,
        }
    }
}

fn default_max_attempts() -> u32 {
    6
}

fn default_initial_backoff_ms() -> u64 {
    500
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Delivery attempts per alert and sink, first try included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each retry, capped at 60 s.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            sinks: Vec::new(),
        }
    }
}

/// `[secrets]`: what filters fetch with `{"control": NAME}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// A JSON object of name → value, re-read on every fetch (it wins over `values`):
    /// rotating a secret is rewriting the file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Name → value; values may be `${ENV}` references.
    #[serde(default)]
    pub values: HashMap<String, Secret>,
}

/// `[slack]`: what authenticates button clicks posted to `/v1/slack/interactions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The Slack app's signing secret (Basic Information → App Credentials), usually
    /// `${SLACK_SIGNING_SECRET}`; it signs every interactivity request.
    pub signing_secret: Secret,
    /// Bot token (`xoxb-…`, scope `chat:write`), usually `${SLACK_BOT_TOKEN}`. With it and
    /// `channel`, the service posts pending approvals itself (`chat.postMessage`) and
    /// rewrites each message (`chat.update`) on every decision, from any channel, and on
    /// expiry.
    #[serde(default)]
    pub bot_token: Option<Secret>,
    /// Channel ID (`C…`) the bot posts pending approvals to.
    #[serde(default)]
    pub channel: Option<String>,
    /// Slack Web API base URL (tests point it at a local receiver).
    #[serde(default = "default_slack_api")]
    pub api_url: String,
}

fn default_slack_api() -> String {
    "https://slack.com/api".to_string()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Base URL approvers reach the service at; alert links point to `<public_url>/console`.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub approvers: Vec<ApproverEntry>,
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Optional sign-in of approvers with JWTs from an OIDC identity provider.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Keys of the filter's `signed_request` credentials, published at
    /// `/.well-known/jwks.json`.
    #[serde(default)]
    pub signing_keys: Vec<SigningKeyConfig>,
    /// Upstream secrets filters fetch by name (`{"control": NAME}`).
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// Slack interactivity: approvers decide by clicking buttons in alert messages.
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    /// Where the console's replay action sends a session's requests (`[replay]`).
    #[serde(default)]
    pub replay: Option<crate::replay::ReplayConfig>,
    /// Built from `signing_keys` at load.
    #[serde(skip)]
    pub jwks: serde_json::Value,
    /// Built from `secrets` and `secrets_file` at load.
    #[serde(skip)]
    pub secret_store: SecretStore,
}

impl ServiceConfig {
    /// Reads, parses, resolves `${ENV}` references and validates a config file.
    pub fn load(path: &Path) -> Result<ServiceConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read config file {}: {e}", path.display())))?;
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::parse(&text, is_json, &env)
    }

    /// Parses config text; `env` supplies `${NAME}` values (a map, so tests need no globals).
    pub fn parse(text: &str, is_json: bool, env: &HashMap<String, String>) -> Result<ServiceConfig, ConfigError> {
        let mut cfg: ServiceConfig = if is_json {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| ConfigError::new(e.path().to_string(), e.inner().to_string()))?
        } else {
            toml::from_str(text).map_err(|e| ConfigError::new("", e.message().to_string()))?
        };
        cfg.resolve_and_validate(env)?;
        Ok(cfg)
    }

    fn resolve_and_validate(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(ConfigError::new("public_url", "must start with http:// or https://"));
            }
        }
        validate_approvers(&mut self.approvers)?;
        if let Some(o) = &self.oidc {
            o.validate("oidc")?;
        }
        if let Some(r) = &self.replay {
            r.validate()?;
        }
        self.jwks = published_jwks(&self.signing_keys, env)?;
        self.secret_store = SecretStore::new(&self.secrets.values, self.secrets.file.as_deref(), env)?;
        if self.alerts.max_attempts == 0 {
            return Err(ConfigError::new("alerts.max_attempts", "must be at least 1"));
        }
        if let Some(slack) = &mut self.slack {
            slack.signing_secret = Secret::new(expand_env(slack.signing_secret.expose(), "slack.signing_secret", env)?);
            if slack.signing_secret.expose().trim().is_empty() {
                return Err(ConfigError::new("slack.signing_secret", "must not be empty"));
            }
            if let Some(t) = &mut slack.bot_token {
                *t = Secret::new(expand_env(t.expose(), "slack.bot_token", env)?);
            }
            if slack.bot_token.is_some() != slack.channel.is_some() {
                return Err(ConfigError::new(
                    "slack.channel",
                    "bot_token and channel go together: set both or neither",
                ));
            }
            if !(slack.api_url.starts_with("http://") || slack.api_url.starts_with("https://")) {
                return Err(ConfigError::new("slack.api_url", "must start with http:// or https://"));
            }
        }
        for (i, sink) in self.alerts.sinks.iter_mut().enumerate() {
            let field = format!("alerts.sinks[{i}]");
            if let (SinkConfig::Slack { interactive: true, .. }, None) = (&*sink, &self.slack) {
                return Err(ConfigError::new(
                    format!("{field}.interactive"),
                    "needs a [slack] section with the signing_secret that authenticates button clicks",
                ));
            }
            match sink {
                SinkConfig::Slack { url, .. } | SinkConfig::Webhook { url, .. } => {
                    *url = resolve_url(url, &format!("{field}.url"), env)?;
                }
                SinkConfig::Pagerduty { routing_key, url, severity, .. } => {
                    *routing_key = Secret::new(expand_env(routing_key.expose(), &format!("{field}.routing_key"), env)?);
                    if routing_key.expose().is_empty() {
                        return Err(ConfigError::new(format!("{field}.routing_key"), "must not be empty"));
                    }
                    if let Some(u) = url {
                        *u = resolve_url(u, &format!("{field}.url"), env)?;
                    }
                    if !matches!(severity.as_str(), "critical" | "error" | "warning" | "info") {
                        return Err(ConfigError::new(
                            format!("{field}.severity"),
                            "must be one of critical, error, warning, info (PagerDuty severities)",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn resolve_url(url: &Secret, field: &str, env: &HashMap<String, String>) -> Result<Secret, ConfigError> {
    let resolved = expand_env(url.expose(), field, env)?;
    if !(resolved.starts_with("http://") || resolved.starts_with("https://")) {
        // The value itself is not quoted: it may be a secret webhook URL.
        return Err(ConfigError::new(field, "must be an http:// or https:// URL"));
    }
    Ok(Secret::new(resolved))
}

/// Replaces every `${NAME}` with the value of environment variable NAME. A missing
/// variable is an error that names the variable, never its (absent) value.
pub fn expand_env(input: &str, field: &str, env: &HashMap<String, String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 2..).unwrap_or_default();
        let Some(end) = after.find('}') else {
            return Err(ConfigError::new(field, "unterminated `${` reference"));
        };
        let name = after.get(..end).unwrap_or_default();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::new(field, "`${...}` must name an environment variable (letters, digits, _)"));
        }
        match env.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(ConfigError::new(field, format!("environment variable `{name}` is not set"))),
        }
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    /// `openssl pkey -pubout` of an Ed25519 test key.
    const ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEADqYNakSl8Qa56NAhZufqI2Cob8J6r42Wi+ulp5Rkvl8=
-----END PUBLIC KEY-----";

    #[test]
    fn expands_env_references_inside_urls() {
        let e = env(&[("HOOK", "abc"), ("HOST", "h.example")]);
        assert_eq!(expand_env("https://${HOST}/x/${HOOK}", "f", &e).unwrap(), "https://h.example/x/abc");
        assert_eq!(expand_env("plain", "f", &e).unwrap(), "plain");
    }

    #[test]
    fn missing_env_variable_is_named_in_the_error() {
        let err = expand_env("${NOPE}", "alerts.sinks[0].url", &env(&[])).unwrap_err();
        assert_eq!(err.field, "alerts.sinks[0].url");
        assert!(err.problem.contains("NOPE"), "{err}");
        assert!(expand_env("${OPEN", "f", &env(&[])).is_err());
        assert!(expand_env("${a-b}", "f", &env(&[])).is_err());
    }

    #[test]
    fn parses_toml_with_all_sink_kinds_and_resolves_secrets() {
        let text = format!(
            r#"
public_url = "https://airlock.example"
[[approvers]]
name = "alice"
token_sha256 = "{HASH}"
groups = ["dba"]
roles = ["approver", "auditor"]

[alerts]
max_attempts = 3
[[alerts.sinks]]
type = "slack"
url = "${{SLACK_URL}}"
[[alerts.sinks]]
type = "webhook"
url = "http://127.0.0.1:9/hook"
events = ["request_denied"]
[[alerts.sinks]]
type = "pagerduty"
routing_key = "${{PD_KEY}}"
"#
        );
        let cfg =
            ServiceConfig::parse(&text, false, &env(&[("SLACK_URL", "https://hooks.example/T1"), ("PD_KEY", "rk")]))
                .unwrap();
        assert_eq!(cfg.approvers[0].roles, vec![Role::Approver, Role::Auditor]);
        assert_eq!(cfg.alerts.sinks.len(), 3);
        match &cfg.alerts.sinks[0] {
            SinkConfig::Slack { url, events, .. } => {
                assert_eq!(url.expose(), "https://hooks.example/T1");
                let all = [AlertEvent::ApprovalPending, AlertEvent::RequestDenied, AlertEvent::ToolDefinitionChanged];
                assert_eq!(events, &all, "a sink that names no events gets every one");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cfg.alerts.sinks[1].events(), &[AlertEvent::RequestDenied]);
        match &cfg.alerts.sinks[2] {
            SinkConfig::Pagerduty { routing_key, severity, .. } => {
                assert_eq!(routing_key.expose(), "rk");
                assert_eq!(severity, "warning");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_config_errors_name_the_field_path() {
        let text = r#"{"approvers":[{"name":"a","token_sha256":"x","grups":[]}]}"#;
        let err = ServiceConfig::parse(text, true, &env(&[])).unwrap_err();
        assert!(err.field.starts_with("approvers[0]"), "{err}");
        assert!(err.problem.contains("grups"), "{err}");
    }

    #[test]
    fn rejects_a_token_that_is_not_a_sha256_hex_digest() {
        let text = r#"{"approvers":[{"name":"a","token_sha256":"secret-token"}]}"#;
        let err = ServiceConfig::parse(text, true, &env(&[])).unwrap_err();
        assert_eq!(err.field, "approvers[0].token_sha256");
        assert!(!err.to_string().contains("secret-token"));
    }

    #[test]
    fn rejects_unknown_sink_fields_and_bad_severity() {
        let text = r#"{"alerts":{"sinks":[{"type":"slack","url":"https://x","channel":"a"}]}}"#;
        assert!(ServiceConfig::parse(text, true, &env(&[])).is_err());
        let text = r#"{"alerts":{"sinks":[{"type":"pagerduty","routing_key":"k","severity":"high"}]}}"#;
        let err = ServiceConfig::parse(text, true, &env(&[])).unwrap_err();
        assert_eq!(err.field, "alerts.sinks[0].severity");
    }

    #[test]
    fn readme_config_example_is_valid() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
        let len = readme[start..].find("```").unwrap();
        let example = readme[start..start + len].replace("<64 hex digits>", HASH);
        let cfg = ServiceConfig::parse(
            &example,
            false,
            &env(&[
                ("SLACK_WEBHOOK_URL", "https://hooks.example/1"),
                ("PD_ROUTING_KEY", "k"),
                ("AIRLOCK_SIGNING_PUBLIC_KEY", ED25519_PUBLIC),
                ("CUSTOMER_DB_TOKEN", "db-token"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.alerts.sinks.len(), 3);
        assert_eq!(cfg.jwks["keys"][0]["kid"], "airlock-2026-02");
        assert_eq!(cfg.secret_store.get("customer-db-token").unwrap().expose(), "db-token");
        assert_eq!(cfg.oidc.unwrap().groups_claim, "realm_access.roles");
    }

    #[test]
    fn secret_debug_output_hides_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn slack_buttons_need_a_signing_secret_and_a_bot_needs_its_channel() {
        let sink = "[[alerts.sinks]]\ntype = \"slack\"\nurl = \"https://hooks.example/x\"\ninteractive = true\n";
        let err = ServiceConfig::parse(sink, false, &env(&[])).unwrap_err();
        assert_eq!(err.field, "alerts.sinks[0].interactive");
        let with_secret = format!("[slack]\nsigning_secret = \"${{S}}\"\n{sink}");
        let cfg = ServiceConfig::parse(&with_secret, false, &env(&[("S", "shh")])).unwrap();
        assert_eq!(cfg.slack.unwrap().signing_secret.expose(), "shh");
        let err = ServiceConfig::parse(&with_secret, false, &env(&[("S", "")])).unwrap_err();
        assert_eq!(err.field, "slack.signing_secret");
        let bot = "[slack]\nsigning_secret = \"s\"\nbot_token = \"xoxb-1\"\n";
        assert_eq!(ServiceConfig::parse(bot, false, &env(&[])).unwrap_err().field, "slack.channel");
        let bad = "[slack]\nsigning_secret = \"s\"\nslack_secret = \"x\"\n";
        assert!(ServiceConfig::parse(bad, false, &env(&[])).is_err(), "unknown keys are refused");
    }
}
