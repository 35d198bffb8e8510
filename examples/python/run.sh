#!/usr/bin/env bash
# End-to-end run of the Python client against a real tenantd:
#   1. a virtualenv (examples/python/.venv) with requirements.txt installed;
#   2. stubs generated from proto/ (generate.sh);
#   3. a fresh PostgreSQL database, migrated with `tenantd migrate`;
#   4. `tenantd serve` on a free port, in the background, until health "" is SERVING;
#   5. walkthrough.py; then the server is stopped and the database dropped.
# Exits with walkthrough.py's status (or non-zero if a set-up step fails).
#
# Run from the repository root after building tenantd:  examples/python/run.sh
# Settings (all optional):
#   TENANTD_BIN            tenantd binary (default target/debug/tenantd)
#   TENANTD_TEST_PG_HOST   PostgreSQL host (127.0.0.1)
#   TENANTD_TEST_PG_PORT   PostgreSQL port (5432)
#   TENANTD_TEST_PG_ADMIN  superuser that creates and migrates the database (postgres);
#                          it and tenantd_app must be able to log in without a password
#   TENANTD_TEST_REDIS_URL Redis URL (redis://127.0.0.1:6379); tenantd also runs without it
#   PYTHON                 interpreter used to create the virtualenv (python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

bin=${TENANTD_BIN:-target/debug/tenantd}
pg_host=${TENANTD_TEST_PG_HOST:-127.0.0.1}
pg_port=${TENANTD_TEST_PG_PORT:-5432}
pg_admin=${TENANTD_TEST_PG_ADMIN:-postgres}
redis_url=${TENANTD_TEST_REDIS_URL:-redis://127.0.0.1:6379}
token="example-token-$RANDOM$RANDOM"

log() { echo "run.sh: $*"; }
[ -x "$bin" ] || { log "no tenantd binary at $bin (build it with cargo build, or set TENANTD_BIN)" >&2; exit 2; }

# 1. Virtualenv, reinstalled only when requirements.txt changes.
venv="$here/.venv"
python="$venv/bin/python"
if [ ! -x "$python" ]; then
  log "creating virtualenv ${venv#"$root"/}"
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
wanted=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  log "installing requirements.txt"
  "$python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$wanted" > "$stamp"
fi

# 2. Stubs.
PYTHON="$python" "$here/generate.sh"

# 3. A fresh database. The prefix lets .ci/run drop it if this script is interrupted.
db="tenantd_test_pyexample_$$_$RANDOM"
psql_admin() { psql -h "$pg_host" -p "$pg_port" -U "$pg_admin" -d postgres -v ON_ERROR_STOP=1 -Atq "$@"; }
workdir=$(mktemp -d)
server_pid=""
cleanup() {
  local status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    log "stopping tenantd (pid $server_pid)"
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 && log "dropped database $db"
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "creating database $db"
psql_admin -c "CREATE DATABASE $db"
TENANTD_MIGRATION_DATABASE_URL="postgres://$pg_admin@$pg_host:$pg_port/$db" "$bin" migrate >"$workdir/migrate.log" 2>&1 \
  || { cat "$workdir/migrate.log" >&2; log "tenantd migrate failed" >&2; exit 1; }
log "migrated"

# 4. Serve on a free port. (Another process could take the port between this probe and
#    tenantd binding it; tenantd then fails to start and this script says so.)
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TENANTD_DATABASE_URL="postgres://tenantd_app@$pg_host:$pg_port/$db" \
TENANTD_REDIS_URL="$redis_url" \
TENANTD_PLATFORM_TOKEN="$token" \
TENANTD_LISTEN_ADDR="127.0.0.1:$port" \
TENANTD_HEALTH_INTERVAL_MS=200 \
  "$bin" serve >"$workdir/server.log" 2>&1 &
server_pid=$!
log "started tenantd serve (pid $server_pid) on 127.0.0.1:$port"

if ! "$python" - "127.0.0.1:$port" "$server_pid" <<'EOF'
import os, sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

target, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
status = "no answer"
with grpc.insecure_channel(target) as channel:
    stub = health_pb2_grpc.HealthStub(channel)
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("run.sh: tenantd exited before becoming ready")
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            if status == "SERVING":
                print('run.sh: health "" is SERVING')
                sys.exit(0)
        except grpc.RpcError as error:
            status = error.code().name
        time.sleep(0.2)
sys.exit(f'run.sh: health "" not SERVING after 60s (last: {status})')
EOF
then
  log "server log:" >&2
  tail -n 50 "$workdir/server.log" >&2
  exit 1
fi

# 5. The walkthrough.
set +e
"$python" "$here/walkthrough.py" --target "127.0.0.1:$port" --token "$token"
status=$?
set -e
if [ "$status" -ne 0 ]; then
  log "walkthrough failed (exit $status); server log:" >&2
  tail -n 50 "$workdir/server.log" >&2
fi
exit "$status"
