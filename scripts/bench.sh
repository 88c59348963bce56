#!/usr/bin/env bash
# The Airlock benchmark suite: what Airlock costs in Envoy, against bare Envoy, a trivial
# Rust Wasm filter and Envoy's native jwt_authn + rbac (+ lua) filters.
#
#   bash scripts/bench.sh            # full run (about 13 minutes on 2 cores, builds included
#                                    # when the target dir is warm); results in target/bench/
#   bash scripts/bench.sh --quick    # smoke run: every scenario once, 1 s each (~2 minutes)
#   bash scripts/bench.sh --only streaming   # streaming masking only (SSE deltas, NDJSON:
#                                    # MB/s per worker, delay per event; ~3 minutes);
#                                    # results in target/bench/only-streaming/
#
# Other options go to the runner (python3 scripts/bench/run.py --help): --rounds N,
# --seconds S, --fixed-rounds N, --fixed-seconds S, --stream-rounds N, --stream-seconds S,
# --skip-streaming, --no-pin, --out DIR.
# AIRLOCK_SKIP_SETUP=1 skips scripts/setup.sh; AIRLOCK_BENCH_SKIP_BUILD=1 uses the
# binaries already built; AIRLOCK_BENCH_SKIP_MASK=1 skips the native masking benchmark.
#
# Writes target/bench/results.json (every run), runs.csv, report.md (the tables that go
# into BENCHMARKS.md), mask-bench.txt, and logs/ (each process's output). The machine
# should be otherwise idle: the suite pins Envoy to CPU 0 and the load generator and
# upstream to CPU 1, and anything else running skews the numbers (interleaving keeps the
# ratios fair, not the absolute figures).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

log() { printf '[bench] %s\n' "$*" >&2; }

quick=0
only=""
prev=""
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --only=*) only="${arg#--only=}" ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
  [ "$prev" = --only ] && only="$arg"
  prev="$arg"
done

[ "${AIRLOCK_SKIP_SETUP:-}" = 1 ] || bash scripts/setup.sh

missing=()
for tool in wrk h2load taskset python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "missing tools: ${missing[*]} (bash scripts/setup.sh installs wrk and h2load)"
  exit 1
fi

out="$root/target/bench"
mkdir -p "$out"
start=$(date +%s)

if [ "${AIRLOCK_BENCH_SKIP_BUILD:-}" != 1 ]; then
  log "building (release): airlock.wasm, trivial filter, demo upstream, control service"
  AIRLOCK_SKIP_SETUP=1 bash scripts/build.sh
  cargo build --quiet --release --target wasm32-wasip1 -p airlock-bench-trivial-filter
  cargo build --quiet --release -p airlock-demo -p airlock-service
  log "built in $(( $(date +%s) - start )) s"
fi

mask_out=""
# The native masking micro-benchmark belongs to the full run, not to `--only streaming`.
if [ "${AIRLOCK_BENCH_SKIP_MASK:-}" != 1 ] && [ -z "$only" ] && [ -f filter/benches/mask.rs ]; then
  mask_out="$out/mask-bench.txt"
  log "native masking micro-benchmark: cargo bench -p airlock-filter --bench mask"
  # Pinned to one CPU like an Envoy worker; the quick run only takes the dense-PII cases.
  filter_arg=()
  [ "$quick" = 1 ] && filter_arg=(-- "dense PII, all detectors")
  cargo bench --quiet --no-run -p airlock-filter --bench mask 2>"$out/mask-bench.err" || true
  if ! taskset -c 0 cargo bench --quiet -p airlock-filter --bench mask "${filter_arg[@]}" >"$mask_out" 2>"$out/mask-bench.err"; then
    log "masking micro-benchmark failed (see $out/mask-bench.err); going on without it"
    mask_out=""
  fi
fi

cmd="bash scripts/bench.sh"
PYTHONDONTWRITEBYTECODE=1 python3 scripts/bench/run.py --command "$cmd" ${mask_out:+--mask-bench-output "$mask_out"} "$@"
log "total $(( $(date +%s) - start )) s"
