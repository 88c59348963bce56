//! The plugin config as operators meet it: a bad one stops Envoy with the field named in
//! the log; the shipped Envoy bootstrap fails closed and hands secrets over by
//! environment; the Istio manifest carries exactly the shipped config, and it loads.

use std::collections::BTreeMap;

use airlock_demo::render::{render, FilterMode};
use airlock_e2e::fixtures::{
    env_secrets, istio_documents, istio_filter, istio_plugin_config, istio_template, shipped_plugin_config,
    wait_first_fetch,
};
use airlock_e2e::*;
use serde_json::{json, Value};

/// Starts Envoy with `config`, expects it to refuse, and returns its log.
fn rejected(config: Value) -> String {
    builder_for(config, TestKeys::shared()).start_expecting_failure().unwrap()
}

fn assert_names(log: &str, field: &str, problem: &str) {
    let line = log
        .lines()
        .find(|l| l.contains("invalid Airlock plugin config"))
        .unwrap_or_else(|| panic!("no config error in the log:\n{log}"));
    assert!(line.contains(&format!("`{field}`")), "field `{field}` not named: {line}");
    assert!(line.contains(problem), "problem `{problem}` not stated: {line}");
    assert!(log.contains("Unable to create Wasm plugin airlock"), "{log}");
}

#[test]
fn bad_regex_stops_envoy_and_the_log_names_the_field() {
    let mut config = test_plugin_config();
    config["rules"][0]["when"]["path"] = json!({"regex": "^/sql(["});
    assert_names(&rejected(config), "rules[0].when.path.regex", "invalid regex");
}

#[test]
fn unknown_field_stops_envoy_and_the_log_names_it() {
    let mut config = test_plugin_config();
    // A typo that would silently widen the rule if it were ignored.
    config["rules"][1]["when"]["negated"] = json!(true);
    let log = rejected(config);
    assert_names(&log, "rules[1].when.negated", "unknown field `negated`");
}

#[test]
fn missing_default_action_stops_envoy_and_the_log_says_so() {
    let mut config = test_plugin_config();
    config.as_object_mut().unwrap().remove("default_action");
    let log = rejected(config);
    let line = log
        .lines()
        .find(|l| l.contains("invalid Airlock plugin config"))
        .unwrap_or_else(|| panic!("no config error in the log:\n{log}"));
    assert!(line.contains("missing field `default_action`"), "{line}");
}

#[test]
fn unknown_mask_profile_stops_envoy_and_the_log_names_the_rule() {
    let mut config = test_plugin_config();
    let rules = config["rules"].as_array().unwrap();
    let index = rules.iter().position(|r| r.get("mask").is_some()).unwrap();
    config["rules"][index]["mask"] = json!("no-such-profile");
    assert_names(&rejected(config), &format!("rules[{index}].mask"), "unknown mask profile `no-such-profile`");
}

#[test]
fn istio_manifest_carries_exactly_the_shipped_plugin_config() {
    let manifest = istio_documents().unwrap();
    assert_eq!(manifest[0]["apiVersion"], "networking.istio.io/v1alpha3");
    assert_eq!(manifest[0]["kind"], "EnvoyFilter");
    assert_eq!(istio_plugin_config().unwrap(), shipped_plugin_config().unwrap());
}

#[test]
fn istio_filter_fails_closed_holds_in_envoy_and_takes_every_secret_from_the_host() {
    let filter = istio_filter().unwrap();
    let wasm = &filter["typed_config"]["config"];
    assert_eq!(wasm["failure_policy"], "FAIL_CLOSED");
    assert_eq!(
        wasm["allow_on_headers_stop_iteration"], true,
        "WasmPlugin cannot set this: the reason the manifest is an EnvoyFilter"
    );
    assert_eq!(wasm["root_id"], "airlock");
    let keys = wasm["vm_config"]["environment_variables"]["host_env_keys"].as_array().unwrap();
    for name in env_secrets(&istio_plugin_config().unwrap()) {
        assert!(
            keys.iter().any(|k| k == name.as_str()),
            "{name} is read by the plugin config but not passed from the host: {keys:?}"
        );
    }
}

#[test]
fn istio_filter_config_loads_in_envoy_and_answers_for_itself() {
    let config = istio_plugin_config().unwrap();
    let issuer = config["auth"]["issuers"][0].as_str().unwrap().to_string();
    let audience = config["auth"]["audiences"][0].as_str().unwrap().to_string();
    let keys = TestKeys::new();
    let dir = std::env::temp_dir().join(format!("airlock-e2e-istio-{}", std::process::id()));
    let stack = builder_for(config, &keys).template(istio_template(&dir).unwrap()).start().unwrap();
    wait_first_fetch(stack.jwks());

    let anonymous = stack.get("/tables", &[]).unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(error_of(&anonymous)["code"], "unauthenticated");
    assert_eq!(anonymous.header("x-airlock-code"), Some("unauthenticated"));

    let token = keys.mint(Alg::ES256, &TokenClaims::new().iss(&issuer).aud(&audience));
    let reply = stack.get("/tables", &[("authorization", &bearer(&token))]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json().unwrap()["tables"], json!(["customers"]));
}

/// The shipped bootstrap rendered with the filter, parsed.
fn rendered_bootstrap() -> Value {
    let template = std::fs::read_to_string(paths::template_path()).unwrap();
    let values: BTreeMap<String, String> = [
        ("ADMIN_PORT", "9901"),
        ("LISTEN_PORT", "10000"),
        ("UPSTREAM_PORT", "8080"),
        ("JWKS_PORT", "8081"),
        ("CONTROL_PORT", "8082"),
        ("WASM_PATH", "/opt/airlock/airlock.wasm"),
        ("PLUGIN_CONFIG", &shipped_plugin_config().unwrap().to_string()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let yaml = render(&template, &values, FilterMode::WithFilter).unwrap();
    serde_norway::from_str(&yaml).unwrap()
}

#[test]
fn shipped_envoy_bootstrap_fails_closed_and_holds_headers_until_the_decision() {
    let bootstrap = rendered_bootstrap();
    let hcm = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filters = hcm["http_filters"].as_array().unwrap();
    let index = filters.iter().position(|f| f["name"] == "airlock").unwrap();
    let wasm = &filters[index]["typed_config"]["config"];
    assert_eq!(wasm["failure_policy"], "FAIL_CLOSED");
    assert_eq!(wasm["root_id"], "airlock");
    assert_eq!(wasm["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    // Envoy itself holds paused headers while the body reaches Airlock: no buffer filter.
    assert_eq!(wasm["allow_on_headers_stop_iteration"], true);
    assert_eq!(filters[index + 1]["name"], "envoy.filters.http.router");
    assert_eq!(filters.last().unwrap()["name"], "envoy.filters.http.router");
    // The plugin config embedded in the bootstrap is the shipped one, parsed back intact.
    let embedded: Value = serde_json::from_str(wasm["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(embedded, shipped_plugin_config().unwrap());
    // Every secret the config reads from the environment is let into the VM.
    let keys = wasm["vm_config"]["environment_variables"]["host_env_keys"].as_array().unwrap();
    for name in env_secrets(&embedded) {
        assert!(keys.iter().any(|k| k == name.as_str()), "{name} not in host_env_keys: {keys:?}");
    }
}
