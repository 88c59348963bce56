#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster on 127.0.0.1 and
# AIRLOCK_TEST_POSTGRES_URL pointing at it, then stops and removes the cluster.
#   service/scripts/with-postgres.sh cargo test -p airlock-service
# Needs Debian's postgresql package (server binaries under /usr/lib/postgresql/*/bin).
# Runs the server as the `postgres` user when invoked as root (initdb refuses root).
set -euo pipefail

bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "[with-postgres] PostgreSQL server binaries not found: apt-get install -y postgresql" >&2
  exit 1
fi
port="${AIRLOCK_PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
data="$(mktemp -d /tmp/airlock-pg.XXXXXX)"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$data"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$data/db" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap cleanup EXIT
"${as_pg[@]}" "$bindir/initdb" -D "$data/db" -U airlock --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" -D "$data/db" -l "$data/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off" start >/dev/null
export AIRLOCK_TEST_POSTGRES_URL="postgres://airlock@127.0.0.1:$port/postgres"
echo "[with-postgres] PostgreSQL on 127.0.0.1:$port" >&2
"$@"
