//! Plugin configs and small helpers shared by the e2e suites.
//!
//! Tests start from the shipped `envoy/plugin-config.json` rather than from configs of
//! their own, so what is tested is what operators deploy; only what a test cannot use
//! as shipped (the issuer and audience of the minted tokens, rule lists of policy tests)
//! is swapped.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::http::Reply;
use crate::jwks::JwksServer;
use crate::paths;
use crate::stack::StackBuilder;
use crate::tokens::{Alg, TestKeys, TokenClaims, DEFAULT_AUD, DEFAULT_ISS};

/// A P-256 key (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`) the
/// suites give Envoy as `AIRLOCK_SIGNING_KEY`: test material, never a real credential.
pub const EC_SIGNING_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSKLxaGiQ9Ihhuark
3BIqCm0EXW2vqwUIFrOQ58TRwI6hRANCAASmcwjXQL/ua6YimrCY9oEs3cHkcKlK
Xmal/ZcG9Xu3LtV18R+katFnlo+N4Tfdr4Xpzh63kFSrQ4Nr/zirdjcg
-----END PRIVATE KEY-----
";

/// The environment variable the shipped config reads the upstream credential from.
pub const UPSTREAM_TOKEN_ENV: &str = "AIRLOCK_DEMO_UPSTREAM_TOKEN";
/// The environment variable the shipped config reads the filter's control-service key from.
pub const FILTER_KEY_ENV: &str = "AIRLOCK_FILTER_KEY";
/// The upstream credential e2e stacks hand to Envoy (see [`builder_for`]).
pub const TEST_UPSTREAM_TOKEN: &str = "e2e-upstream-secret-9f4c2a7d";
/// The protected service's cluster in `envoy/envoy.yaml` (Istio naming).
pub const UPSTREAM_CLUSTER: &str = "outbound|8080||customer-db.agents.svc.cluster.local";
/// The identity provider's cluster in `envoy/envoy.yaml`; it reaches the stack's JWKS server.
pub const JWKS_CLUSTER: &str = "outbound|8080||idp.airlock.svc.cluster.local";

/// `envoy/plugin-config.json` of this workspace.
pub fn shipped_plugin_config_path() -> PathBuf {
    paths::workspace_root().join("envoy").join("plugin-config.json")
}

/// `envoy/istio/envoyfilter.yaml` of this workspace.
pub fn istio_manifest_path() -> PathBuf {
    paths::workspace_root().join("envoy").join("istio").join("envoyfilter.yaml")
}

/// The documents of the Istio manifest, as JSON values.
pub fn istio_documents() -> Result<Vec<Value>, String> {
    use serde::Deserialize as _;
    let path = istio_manifest_path();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// The HTTP filter the Istio manifest inserts (`patch.value` of its EnvoyFilter).
pub fn istio_filter() -> Result<Value, String> {
    istio_documents()?
        .into_iter()
        .find(|d| d["kind"] == "EnvoyFilter")
        .map(|d| d["spec"]["configPatches"][0]["patch"]["value"].clone())
        .ok_or_else(|| "the Istio manifest has no EnvoyFilter".to_string())
}

/// The plugin config the Istio manifest carries, parsed.
pub fn istio_plugin_config() -> Result<Value, String> {
    let filter = istio_filter()?;
    let text = filter["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .ok_or("the EnvoyFilter has no plugin configuration")?;
    serde_json::from_str(text).map_err(|e| format!("the EnvoyFilter's plugin configuration is not JSON: {e}"))
}

/// A bootstrap template like `envoy/envoy.yaml` whose Airlock filter is exactly the one
/// the Istio manifest inserts, but for the module read from `{{WASM_PATH}}` instead of
/// fetched: the plugin config is the manifest's own, not `{{PLUGIN_CONFIG}}`. Written
/// into `dir`; returns its path.
pub fn istio_template(dir: &std::path::Path) -> Result<PathBuf, String> {
    let mut filter = istio_filter()?;
    filter["typed_config"]["config"]["vm_config"]["code"] = json!({"local": {"filename": "{{WASM_PATH}}"}});
    let template = std::fs::read_to_string(paths::template_path()).map_err(|e| e.to_string())?;
    let begin = template.find("# airlock-filter-begin").ok_or("no airlock-filter-begin marker")?;
    let end = template.find("# airlock-filter-end").ok_or("no airlock-filter-end marker")?;
    let indent = template.get(..begin).and_then(|t| t.rsplit('\n').next()).unwrap_or_default();
    let replaced = format!(
        "{}# airlock-filter-begin\n{indent}- {}\n{indent}{}",
        template.get(..begin).unwrap_or_default(),
        filter,
        template.get(end..).unwrap_or_default()
    );
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join("istio-envoy.yaml");
    std::fs::write(&path, replaced).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The shipped plugin config, exactly as in the file.
pub fn shipped_plugin_config() -> Result<Value, String> {
    let path = shipped_plugin_config_path();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

/// The shipped config made to accept the tokens [`TestKeys`] mints: issuer and audience
/// swapped, and the rotation re-fetch allowed after 1 s instead of 10 s so key-rotation
/// tests stay short. Everything else (rules, masking, credentials, remote JWKS over the
/// Istio-named cluster) is as shipped.
pub fn test_plugin_config() -> Value {
    // The shipped file is part of the repository: failing to read it is a broken checkout.
    let mut config = shipped_plugin_config().unwrap_or_else(|e| panic!("{e}"));
    config["auth"]["issuers"] = json!([DEFAULT_ISS]);
    config["auth"]["audiences"] = json!([DEFAULT_AUD]);
    config["auth"]["jwks"]["remote"]["min_refresh_interval_seconds"] = json!(1);
    config
}

/// [`test_plugin_config`] with other rules and default action (policy tests).
pub fn config_with_rules(rules: Value, default_action: &str) -> Value {
    let mut config = test_plugin_config();
    config["rules"] = rules;
    config["default_action"] = json!(default_action);
    config
}

/// `config` with its keys written inline instead of fetched.
pub fn with_inline_jwks(mut config: Value, jwks: Value) -> Value {
    config["auth"]["jwks"] = json!({ "inline": jwks });
    config
}

/// A stack builder for `config` with `keys` served by the JWKS server and every secret
/// the config reads from the environment (`{"env": NAME}`) in Envoy's environment, as a
/// deployment of the shipped config needs: the upstream credential is
/// [`TEST_UPSTREAM_TOKEN`], the filter's key for the control service
/// [`crate::control::FILTER_KEY`] (what [`crate::control::ControlService`] expects), any
/// other secret a fixed test value derived from its name.
pub fn builder_for(config: Value, keys: &TestKeys) -> StackBuilder {
    let mut builder = crate::Stack::builder().jwks(keys.jwks_json());
    for name in env_secrets(&config) {
        let value = match name.as_str() {
            UPSTREAM_TOKEN_ENV => TEST_UPSTREAM_TOKEN.to_string(),
            FILTER_KEY_ENV => crate::control::FILTER_KEY.to_string(),
            _ => format!("e2e-test-secret-for-{}", name.to_ascii_lowercase()),
        };
        builder = builder.envoy_env(&name, &value);
    }
    builder.plugin_config(config)
}

/// Names of the environment variables `config` reads secrets from (`{"env": NAME}`
/// objects anywhere in it), sorted and deduplicated.
pub fn env_secrets(config: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let (1, Some(Value::String(name))) = (map.len(), map.get("env")) {
                    out.push(name.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(config, &mut out);
    out.sort();
    out.dedup();
    out
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A fresh ES256 token for `sub` in `groups`, as an `authorization` value.
pub fn auth_for(keys: &TestKeys, sub: &str, groups: &[&str]) -> String {
    bearer(&keys.mint(Alg::ES256, &TokenClaims::new().sub(sub).groups(groups)))
}

/// The `error` object of a filter answer (`Value::Null` if the body is not one).
pub fn error_of(reply: &Reply) -> Value {
    reply.json().ok().and_then(|v| v.get("error").cloned()).unwrap_or(Value::Null)
}

/// The JWKS document `keys` publishes plus its HMAC key as an `oct` JWK, for tests of
/// HS256 through a fetched key set.
pub fn jwks_with_hmac(keys: &TestKeys) -> Value {
    let mut doc = keys.jwks();
    if let Some(list) = doc["keys"].as_array_mut() {
        list.push(keys.jwk(Alg::HS256));
    }
    doc
}

/// Waits until the JWKS server has answered at least one fetch (the filter fetches on
/// its first timer tick); a request sent before that pauses for a fetch of its own, which
/// is correct but makes fetch counts in tests less predictable.
pub fn wait_first_fetch(jwks: &JwksServer) -> bool {
    jwks.wait_for_fetches(1, std::time::Duration::from_secs(10))
}
