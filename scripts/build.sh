#!/usr/bin/env bash
# Builds airlock.wasm (release, wasm32-wasip1) into target/airlock.wasm, plus the native
# binaries (demo upstream/IdP, control service) the run and test scripts start.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ "${AIRLOCK_SKIP_SETUP:-}" = 1 ] || bash scripts/setup.sh

cargo build --quiet --release --target wasm32-wasip1 -p airlock-filter
cp target/wasm32-wasip1/release/airlock_filter.wasm target/airlock.wasm
echo "[build] target/airlock.wasm: $(wc -c < target/airlock.wasm) bytes" >&2
