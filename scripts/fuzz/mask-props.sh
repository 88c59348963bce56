#!/usr/bin/env bash
# Long run of the masking property tests (filter/tests/mask_props.rs). CI runs them with
# 128 cases per property and a fixed seed (a few seconds); this runs many more cases with
# a random seed each time, so every run explores new inputs.
#
#   bash scripts/fuzz/mask-props.sh                 # 50,000 cases per property
#   bash scripts/fuzz/mask-props.sh 200000          # more
#   PROPTEST_RNG_SEED=1234 bash scripts/fuzz/mask-props.sh 50000   # replay one seed
#
# A failure prints its minimal (shrunk) input; make it a named test in
# filter/src/mask/tests.rs (or filter/src/stream/) next to its fix.
set -euo pipefail
cd "$(dirname "$0")/../.."
cases="${1:-50000}"
export CARGO_INCREMENTAL=0
# Release: the properties run ~10x faster; shrinking a failure stays quick.
cargo test --release -p airlock-filter --test mask_props --no-run
start=$(date +%s)
PROPTEST_CASES="$cases" cargo test --release -p airlock-filter --test mask_props -- --test-threads 2
echo "[mask-props] $cases cases per property, $(( $(date +%s) - start )) s" >&2
