#!/usr/bin/env bash
# Where does Airlock's per-request CPU go? Runs the filter's request flow natively
# (bench/flow-profile: same Rust code as airlock.wasm, a host that counts every host
# call) on the benchmark's policy, with audit records on.
#
#   bash scripts/bench/profile.sh [get|post|mask-1m] [N] [--callgrind]
#
# Prints µs per request (native) and host calls per request; with --callgrind also runs
# it under valgrind and prints the functions with the most instructions (inclusive).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
scenario="${1:-get}"
n="${2:-}"
callgrind=0
for a in "$@"; do [ "$a" = --callgrind ] && callgrind=1; done
case "$n" in ''|--callgrind) n=""; ;; esac

export CARGO_TARGET_DIR="$root/target/flow-profile"
cargo build --quiet --release --manifest-path bench/flow-profile/Cargo.toml
bin="$CARGO_TARGET_DIR/release/airlock-flow-profile"
cfg="$root/target/flow-profile/bench-policy.json"
PYTHONDONTWRITEBYTECODE=1 python3 scripts/bench/policy.py airlock --audit > "$cfg"

if [ "$callgrind" = 1 ]; then
  command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
  case "$scenario" in mask-*) runs="${n:-3}" ;; *) runs="${n:-3000}" ;; esac
  out="$root/target/flow-profile/callgrind.$scenario"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$cfg" "$scenario" "$runs"
  callgrind_annotate --inclusive=yes "$out" | grep -E 'airlock_filter|hmac_sha256|serde_json|regex' | head -40
  echo "full profile: callgrind_annotate $out" >&2
else
  "$bin" "$cfg" "$scenario" ${n:+"$n"}
fi
