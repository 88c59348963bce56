//! The bootstrap template and its renderer, checked against the real Envoy binary.

use std::collections::BTreeMap;
use std::process::Command;

use airlock_demo::render::{render, FilterMode};
use airlock_e2e::{paths, Stack};
use serde_json::json;

fn values(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut v: BTreeMap<String, String> =
        [("ADMIN_PORT", "0"), ("LISTEN_PORT", "0"), ("UPSTREAM_PORT", "1"), ("JWKS_PORT", "2"), ("CONTROL_PORT", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

fn envoy_validate(yaml: &str, name: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("airlock-render-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(paths::envoy_bin().unwrap())
        .args(["--mode", "validate", "--disable-hot-restart", "-l", "warning", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), log)
}

#[test]
fn stack_start_names_a_template_placeholder_left_without_value() {
    let dir = std::env::temp_dir().join(format!("airlock-render-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let template = std::fs::read_to_string(paths::template_path())
        .unwrap()
        .replace("connect_timeout: 5s", "connect_timeout: {{UPSTREAM_CONNECT_TIMEOUT}}");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, template).unwrap();
    let err = Stack::builder().bare().template(&path).start().err().expect("start must fail");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("UPSTREAM_CONNECT_TIMEOUT") && err.contains("without a value"), "{err}");
}

#[test]
fn stack_start_rejects_a_value_for_a_placeholder_the_template_lacks() {
    let err = Stack::builder().bare().set("LISTEN_PROT", "1").start().err().expect("start must fail");
    assert!(err.contains("LISTEN_PROT") && err.contains("does not contain"), "{err}");
}

#[test]
fn bare_rendering_of_the_shipped_template_passes_envoy_validation() {
    let template = std::fs::read_to_string(paths::template_path()).unwrap();
    let yaml = render(&template, &values(&[]), FilterMode::Bare).unwrap();
    let (ok, log) = envoy_validate(&yaml, "bare");
    assert!(ok, "{log}");
}

#[test]
fn filter_rendering_parses_and_fails_only_on_loading_the_wasm() {
    // A file that is not a Wasm module: Envoy must get past YAML and proto parsing of the
    // whole bootstrap (multi-line plugin JSON included) and fail only on loading it.
    let fake_wasm = std::env::temp_dir().join(format!("airlock-render-{}-not-a-module.wasm", std::process::id()));
    std::fs::write(&fake_wasm, b"not wasm").unwrap();
    let config = serde_json::to_string_pretty(&json!({
        "rules": [{"name": "block-drop", "when": {"body": {"pointer": "/sql", "regex": "(?i)drop\\s+table"}},
            "action": "deny"}],
        "note": "quotes \" and colons: and # hashes and {{braces}} survive",
    }))
    .unwrap();
    let template = std::fs::read_to_string(paths::template_path()).unwrap();
    let yaml = render(
        &template,
        &values(&[("WASM_PATH", fake_wasm.to_str().unwrap()), ("PLUGIN_CONFIG", &config)]),
        FilterMode::WithFilter,
    )
    .unwrap();
    assert!(
        yaml.contains("                    \"note\": \"quotes \\\" and colons: and # hashes and {{braces}} survive\""),
        "{yaml}"
    );
    let (ok, log) = envoy_validate(&yaml, "filter");
    std::fs::remove_file(&fake_wasm).unwrap();
    assert!(!ok, "validation cannot pass without a wasm file: {log}");
    assert!(log.contains("Unable to create Wasm plugin airlock"), "{log}");
    assert!(!log.contains("INVALID_ARGUMENT") && !log.contains("Unable to parse"), "{log}");
}
