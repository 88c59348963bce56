//! The plugin configuration: parsed and validated once when Envoy configures the plugin,
//! then shared read-only by every request of the VM.
//!
//! Everything that can be wrong is found here, with the exact field named, so a bad config
//! stops the plugin from starting instead of surfacing as odd behaviour under traffic.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::approval::APPROVAL_ID_HEADER;
use crate::audit::{self, AuditConfig, AuditSpec};
use crate::config_error::ConfigError;
use crate::control::{self, Control, ControlSpec};
use crate::credentials::{self, EnvLookup, UpstreamSpec, Upstreams};
use crate::hold::{self, HoldBy, HoldConfig, HoldSpec};
use crate::jwt::{self, AuthConfig, AuthSpec};
use crate::mask::{self, MaskProfile, MaskProfileSpec};
use crate::pins::{self, McpConfig, McpSpec, PinMode};
use crate::policy::{self, Action, Policy, RuleSpec, SqlDefaults};
use crate::sql::{SensitiveColumns, Table};

/// Envoy buffers up to this much per connection in the configs we ship (16 MiB); the
/// filter's limits must stay below so the filter, not Envoy, decides what happens.
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024 - 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginConfigSpec {
    /// Policy decisions are logged and counted but not enforced. Token checks still are:
    /// letting unauthenticated traffic through would inject credentials for strangers.
    #[serde(default)]
    dry_run: bool,
    /// How a request waits while its body is inspected (see `hold.rs`).
    #[serde(default)]
    hold: HoldSpec,
    auth: AuthSpec,
    #[serde(default = "default_request_body_limit")]
    request_body_limit_bytes: usize,
    #[serde(default = "default_response_body_limit")]
    response_body_limit_bytes: usize,
    #[serde(default)]
    identity_headers: IdentityHeadersSpec,
    #[serde(default)]
    mask_profiles: BTreeMap<String, MaskProfileSpec>,
    #[serde(default)]
    upstreams: Vec<UpstreamSpec>,
    /// The control service: needed by `approve` rules and for the audit trail.
    #[serde(default)]
    control: Option<ControlSpec>,
    /// Audit settings; auditing is on whenever `control` is set, unless disabled here.
    #[serde(default)]
    audit: Option<AuditSpec>,
    /// MCP settings: tool-definition pinning.
    #[serde(default)]
    mcp: McpSpec,
    rules: Vec<RuleSpec>,
    /// The SQL dialect of `sql` conditions that do not name their own.
    #[serde(default = "default_sql_dialect")]
    sql_dialect: String,
    /// Columns whose values are sensitive, per table (`customers`, `main.customers`) or
    /// in every table (`*`): what `sql_result` masks by column and `sql` conditions'
    /// `sensitive` facet follows through queries.
    #[serde(default)]
    sensitive_columns: BTreeMap<String, Vec<String>>,
    /// Required on purpose: what happens to a request no rule matches must be a decision
    /// someone wrote down, not a default they did not know about.
    default_action: Action,
}

fn default_sql_dialect() -> String {
    "generic".into()
}

fn sensitive_columns(spec: &BTreeMap<String, Vec<String>>) -> Result<SensitiveColumns, ConfigError> {
    let mut out = SensitiveColumns::default();
    for (table, columns) in spec {
        let field = format!("sensitive_columns.{table}");
        let parsed =
            match table.as_str() {
                "*" => None,
                name => Some(Table::parse(name).ok_or_else(|| {
                    ConfigError::new(&field, format!("`{name}` is not `table`, `schema.table` or `*`"))
                })?),
            };
        if columns.is_empty() {
            return Err(ConfigError::new(&field, "is empty; list the table's sensitive columns or remove it"));
        }
        let mut names = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            let name = crate::sql::unquoted_lower(column);
            if name.is_empty() || name.contains(['.', '*']) {
                return Err(ConfigError::new(
                    format!("{field}[{i}]"),
                    format!("`{column}` is not a column name (no table, no `*`)"),
                ));
            }
            names.push(name);
        }
        out.add(parsed, names);
    }
    Ok(out)
}

fn default_request_body_limit() -> usize {
    1024 * 1024
}

fn default_response_body_limit() -> usize {
    4 * 1024 * 1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct IdentityHeadersSpec {
    subject: String,
    groups: String,
}

impl Default for IdentityHeadersSpec {
    fn default() -> Self {
        IdentityHeadersSpec { subject: "x-airlock-subject".into(), groups: "x-airlock-groups".into() }
    }
}

/// Headers through which the filter tells the upstream who called. Only the filter sets
/// them: copies sent by the client are always removed first.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub subject: String,
    pub groups: String,
}

pub struct Config {
    pub dry_run: bool,
    pub hold: HoldConfig,
    pub auth: AuthConfig,
    pub request_body_limit: usize,
    pub response_body_limit: usize,
    pub identity_headers: IdentityHeaders,
    /// Sorted by name; rules refer to profiles by index into this list.
    pub mask_profiles: Vec<(String, MaskProfile)>,
    pub upstreams: Upstreams,
    pub policy: Policy,
    pub control: Option<Control>,
    pub audit: Option<AuditConfig>,
    pub mcp: McpConfig,
    /// Masks bodies in audit records and approval requests when the deciding rule has no
    /// profile of its own: every built-in detector, so no secret reaches the store.
    pub record_masker: MaskProfile,
    /// What the client sent that never goes upstream: the token header, a ticket id and
    /// every upstream credential header, deduplicated here so a request removes each once.
    pub stripped_headers: Vec<String>,
}

impl Config {
    /// Parses and validates the plugin configuration JSON.
    pub fn from_json(bytes: &[u8], env: EnvLookup) -> Result<Config, ConfigError> {
        let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
        let spec: PluginConfigSpec = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            ConfigError::new(field, e.into_inner().to_string())
        })?;
        Config::compile(spec, env)
    }

    fn compile(spec: PluginConfigSpec, env: EnvLookup) -> Result<Config, ConfigError> {
        let auth = jwt::compile(spec.auth, "auth")?;
        let request_body_limit = check_limit(spec.request_body_limit_bytes, "request_body_limit_bytes")?;
        let response_body_limit = check_limit(spec.response_body_limit_bytes, "response_body_limit_bytes")?;
        let identity_headers = IdentityHeaders {
            subject: check_header_name(spec.identity_headers.subject, "identity_headers.subject")?,
            groups: check_header_name(spec.identity_headers.groups, "identity_headers.groups")?,
        };
        if identity_headers.subject == identity_headers.groups {
            return Err(ConfigError::new("identity_headers.groups", "must differ from identity_headers.subject"));
        }
        if [&identity_headers.subject, &identity_headers.groups].contains(&&auth.header) {
            return Err(ConfigError::new("identity_headers", "an identity header cannot be the token header"));
        }

        let mut mask_profiles = Vec::with_capacity(spec.mask_profiles.len());
        for (name, profile) in spec.mask_profiles {
            let field = format!("mask_profiles.{name}");
            if !valid_stat_name(&name) {
                return Err(ConfigError::new(field, "profile names may only use a-z, 0-9, `_`, `-` and `.`"));
            }
            let compiled = mask::compile_profile(profile, &field)?;
            mask_profiles.push((name, compiled));
        }
        let upstreams = credentials::compile(spec.upstreams, "upstreams", env)?;
        for (i, cred) in upstreams.credential_headers().enumerate() {
            if cred == identity_headers.subject || cred == identity_headers.groups {
                return Err(ConfigError::new(
                    format!("upstreams[{i}].credential"),
                    "credential header collides with an identity header",
                ));
            }
        }
        let names: Vec<&str> = mask_profiles.iter().map(|(n, _)| n.as_str()).collect();
        if crate::sql::Dialect::named(&spec.sql_dialect).is_none() {
            return Err(ConfigError::new(
                "sql_dialect",
                format!("unknown SQL dialect `{}`; dialects are {}", spec.sql_dialect, crate::sql::DIALECTS.join(", ")),
            ));
        }
        let sql = SqlDefaults {
            dialect: spec.sql_dialect,
            sensitive: std::rc::Rc::new(sensitive_columns(&spec.sensitive_columns)?),
        };
        let policy = policy::compile(spec.rules, spec.default_action, &names, &sql, "rules")?;
        let control = spec.control.map(|c| control::compile(c, "control", env)).transpose()?;
        let audit = match (&control, spec.audit) {
            (Some(_), audit) => audit::compile(audit.unwrap_or_default(), "audit")?,
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "audit",
                    "auditing ships records to the control service: configure `control` too",
                ))
            }
            (None, None) => None,
        };
        if control.is_none() {
            if let Some(i) = policy.rules().iter().position(|r| r.approval().is_some()) {
                return Err(ConfigError::new(
                    format!("rules[{i}].approval"),
                    "approvals are held by the control service: configure `control`",
                ));
            }
        }
        if control.is_none() && !upstreams.control_secrets.is_empty() {
            return Err(ConfigError::new(
                "upstreams",
                format!(
                    "secret `{}` is held by the control service: configure `control`",
                    upstreams.control_secrets.iter().map(|s| s.name.as_str()).next().unwrap_or_default()
                ),
            ));
        }
        let hold = hold::compile(spec.hold, "hold")?;
        if let (HoldBy::BufferFilter, Some(i)) = (hold.by, upstreams.first_signed()) {
            return Err(ConfigError::new(
                format!("upstreams[{i}].credential.type"),
                "a signed_request token is bound to the body, and with `hold.by: buffer_filter` the headers move on \
                 before the body is read: use `hold.by: envoy`",
            ));
        }
        if let (HoldBy::BufferFilter, Some(i)) = (hold.by, upstreams.first_exchanged()) {
            return Err(ConfigError::new(
                format!("upstreams[{i}].credential.type"),
                "a token_exchange credential is fetched while the request waits, and with `hold.by: buffer_filter` \
                 the headers move on first: use `hold.by: envoy`",
            ));
        }
        let mcp = pins::compile(spec.mcp, "mcp")?;
        if control.is_none() && mcp.pin_tools != PinMode::Off {
            return Err(ConfigError::new(
                "mcp.pin_tools",
                "pins are kept, and changes alerted and accepted, by the control service: configure `control`",
            ));
        }
        let all_detectors: MaskProfileSpec = serde_json::from_value(serde_json::json!({"detectors": ["all"]}))
            .map_err(|e| ConfigError::new("", format!("internal record masker: {e}")))?;
        let record_masker = mask::compile_profile(all_detectors, "")?;
        let mut stripped_headers = vec![auth.header.clone(), APPROVAL_ID_HEADER.to_string()];
        for header in upstreams.credential_headers() {
            if !stripped_headers.iter().any(|h| h == header) {
                stripped_headers.push(header.to_string());
            }
        }

        Ok(Config {
            dry_run: spec.dry_run,
            hold,
            auth,
            request_body_limit,
            response_body_limit,
            identity_headers,
            mask_profiles,
            upstreams,
            policy,
            control,
            audit,
            mcp,
            record_masker,
            stripped_headers,
        })
    }

    pub fn mask_profile(&self, index: usize) -> Option<&MaskProfile> {
        self.mask_profiles.get(index).map(|(_, p)| p)
    }
}

fn check_limit(value: usize, field: &str) -> Result<usize, ConfigError> {
    if value == 0 || value > MAX_BODY_LIMIT {
        return Err(ConfigError::new(field, format!("must be between 1 and {MAX_BODY_LIMIT} bytes")));
    }
    Ok(value)
}

fn check_header_name(name: String, field: &str) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    let token_chars = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if lower.is_empty() || !lower.bytes().all(token_chars) {
        return Err(ConfigError::new(field, format!("`{name}` is not a valid HTTP header name")));
    }
    Ok(lower)
}

/// Names that end up in Envoy stat names.
pub fn valid_stat_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}
