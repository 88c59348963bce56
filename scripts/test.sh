#!/usr/bin/env bash
# Runs every test: lints, unit tests of the filter logic, the control service's tests
# (SQLite, PostgreSQL, headless Chromium), and the end-to-end tests through real Envoy
# with the built airlock.wasm. Installs what is missing first (idempotent).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bash scripts/setup.sh
AIRLOCK_SKIP_SETUP=1 bash scripts/build.sh

echo "[test] rustfmt (rustfmt.toml: 120 columns) and no line over 120 characters" >&2
cargo fmt --all --check
cargo fmt --manifest-path bench/flow-profile/Cargo.toml --check
python3 - <<'PY'
import subprocess, sys
files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.rs"], capture_output=True, text=True, check=True).stdout.split()
long = [f"{f}:{n}" for f in files for n, line in enumerate(open(f, encoding="utf-8"), 1) if len(line.rstrip("\n")) > 120]
if long:
    sys.exit("lines over 120 characters (rustfmt cannot break these; split them by hand):\n  " + "\n  ".join(long))
PY

echo "[test] clippy (filter for wasm32, then the whole workspace)" >&2
cargo clippy --quiet -p airlock-filter --target wasm32-wasip1 --release -- -D warnings
cargo clippy --quiet --workspace --all-targets -- -D warnings

echo "[test] the filter's unit tests compiled to wasm32-wasip1, where the filter runs (wasmtime)" >&2
CARGO_TARGET_WASM32_WASIP1_RUNNER="$root/.venv/bin/python $root/scripts/wasi-run.py" \
  cargo test --quiet -p airlock-filter --target wasm32-wasip1 --tests

echo "[test] cargo test --workspace (PostgreSQL throwaway cluster, Chromium required)" >&2
export AIRLOCK_REQUIRE_BROWSER=1
bash service/scripts/with-postgres.sh cargo test --workspace

echo "[test] soak and faults, short: 80% of peak with audit on, control service killed, JWKS stalled" \
  "during a key rotation, slow upstream; 0 records lost, 0 filter errors, flat RSS (~90 s)" >&2
AIRLOCK_SKIP_SETUP=1 bash scripts/soak.sh --short
echo "[test] all tests passed" >&2
