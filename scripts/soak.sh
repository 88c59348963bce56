#!/usr/bin/env bash
# Soak and faults (issue 13): Airlock in a real Envoy with audit on, at 80% of its measured
# peak, for 10 minutes, then the same load with the control service killed and restarted,
# the JWKS endpoint stalling during a key rotation, and a slow upstream. Exits 1 when an
# invariant fails (records lost, filter errors, RSS growth, broken hash chain).
#
#   bash scripts/soak.sh                 # full run: 10 min steady + 3 x 2 min faults (~17 min)
#   bash scripts/soak.sh --short         # CI run (scripts/test.sh): ~90 s, debug support binaries
#   bash scripts/soak.sh --minutes 30    # longer steady phase
#
# Other options go to the runner (python3 scripts/bench/soak.py --help): --fault-seconds S,
# --outage S, --fraction F, --no-pin, --out DIR. AIRLOCK_SKIP_SETUP=1 skips setup.sh;
# AIRLOCK_BENCH_SKIP_BUILD=1 uses what is built. Results: target/soak/ (--short:
# target/soak-short/): report.md, results.json, rss.csv (VmRSS over time), logs/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

short=0
for arg in "$@"; do
  case "$arg" in
    --short) short=1 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
done

[ "${AIRLOCK_SKIP_SETUP:-}" = 1 ] || bash scripts/setup.sh
for tool in wrk h2load taskset python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "[soak] missing $tool (bash scripts/setup.sh installs it)" >&2; exit 1; }
done

# The short run reuses the debug binaries the tests built: a release build of the
# support processes would cost CI minutes. Envoy runs the release airlock.wasm either way.
profile=release
[ "$short" = 1 ] && profile=debug
if [ "${AIRLOCK_BENCH_SKIP_BUILD:-}" != 1 ]; then
  AIRLOCK_SKIP_SETUP=1 bash scripts/build.sh
  if [ "$profile" = release ]; then
    cargo build --quiet --release -p airlock-demo -p airlock-service
  else
    cargo build --quiet -p airlock-demo -p airlock-service
  fi
fi
PYTHONDONTWRITEBYTECODE=1 python3 scripts/bench/soak.py --bin-dir "target/$profile" "$@"
