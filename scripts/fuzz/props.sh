#!/usr/bin/env bash
# Long run of the filter's property tests: masking (filter/tests/mask_props.rs) and the
# parsers of hostile input — request targets, SQL text, JWTs, the plugin config, SSE and
# NDJSON framing, the JSON walker (filter/tests/parser_props.rs). CI runs them with 128
# cases per property and a fixed seed (seconds); this runs many more cases with a random
# seed each time, so every run explores new inputs.
#
#   bash scripts/fuzz/props.sh                        # 50,000 cases per property, both suites
#   bash scripts/fuzz/props.sh 200000 mask_props      # more, one suite
#   PROPTEST_RNG_SEED=1234 bash scripts/fuzz/props.sh 50000   # replay one seed
#
# A failure prints its minimal (shrunk) input; make it a named unit test in the module at
# fault (filter/src/mask/tests.rs, filter/src/stream/tests/, ...) next to its fix.
set -euo pipefail
cd "$(dirname "$0")/../.."
cases="${1:-50000}"
suites=("${@:2}")
[ ${#suites[@]} -gt 0 ] || suites=(mask_props parser_props)
export CARGO_INCREMENTAL=0
args=()
for suite in "${suites[@]}"; do args+=(--test "$suite"); done
# Release: the properties run ~10x faster; shrinking a failure stays quick.
cargo test --release -p airlock-filter "${args[@]}" --no-run
start=$(date +%s)
PROPTEST_CASES="$cases" cargo test --release -p airlock-filter "${args[@]}" -- --test-threads 2
echo "[props] $cases cases per property (${suites[*]}), $(( $(date +%s) - start )) s" >&2
