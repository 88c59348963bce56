#!/usr/bin/env bash
# Runs every test: lints, unit tests of the filter logic, the control service's tests
# (SQLite, PostgreSQL, headless Chromium), and the end-to-end tests through real Envoy
# with the built airlock.wasm. Installs what is missing first (idempotent).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bash scripts/setup.sh
AIRLOCK_SKIP_SETUP=1 bash scripts/build.sh

echo "[test] clippy (filter for wasm32, then the whole workspace)" >&2
cargo clippy --quiet -p airlock-filter --target wasm32-wasip1 --release -- -D warnings
cargo clippy --quiet --workspace --all-targets -- -D warnings

echo "[test] cargo test --workspace (PostgreSQL throwaway cluster, Chromium required)" >&2
export AIRLOCK_REQUIRE_BROWSER=1
bash service/scripts/with-postgres.sh cargo test --workspace
echo "[test] all tests passed" >&2
