#!/usr/bin/env bash
# End-to-end run of the Python client against a real tenantd:
#   1. a virtualenv (examples/python/.venv) with requirements.txt installed;
#   2. stubs generated from proto/ (generate.sh);
#   3. a fresh PostgreSQL database, migrated with `tenantd migrate`;
#   4. `tenantd serve` on a free port, in the background, until health "" is SERVING;
#   5. walkthrough.py; then the server is stopped;
#   6. the same over mutual TLS: a test CA, server and client certificates made with openssl,
#      `tenantd serve` with TENANTD_TLS_*, walkthrough.py --tls-ca-file/--tls-cert-file, on a
#      fresh database (the walkthrough creates fixed slugs); then the database is dropped.
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
  for name in "$db" "${db}_tls"; do
    psql_admin -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 && log "dropped database $name"
  done
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v openssl >/dev/null || { log "openssl is needed for the TLS pass (apt-get install openssl)" >&2; exit 2; }

# Runs steps 3-5 on database $1; the rest of the arguments go to walkthrough.py. With
# TLS_ENV set (space-separated NAME=VALUE), tenantd serves with it and the health wait uses
# the plaintext health port.
run_once() {
  local name=$1; shift
  log "creating database $name"
  psql_admin -c "CREATE DATABASE $name"
  TENANTD_MIGRATION_DATABASE_URL="postgres://$pg_admin@$pg_host:$pg_port/$name" "$bin" migrate >"$workdir/migrate.log" 2>&1 \
    || { cat "$workdir/migrate.log" >&2; log "tenantd migrate failed" >&2; return 1; }
  log "migrated"

  # 4. Serve on a free port. (Another process could take the port between this probe and
  #    tenantd binding it; tenantd then fails to start and this script says so.)
  port=$(free_port)
  local health_port=$port
  local -a tls_env=()
  if [ -n "${TLS_ENV:-}" ]; then
    health_port=$(free_port)
    read -r -a tls_env <<<"$TLS_ENV TENANTD_HEALTH_LISTEN_ADDR=127.0.0.1:$health_port"
  fi
  env TENANTD_DATABASE_URL="postgres://tenantd_app@$pg_host:$pg_port/$name" \
    TENANTD_REDIS_URL="$redis_url" \
    TENANTD_PLATFORM_TOKEN="$token" \
    TENANTD_LISTEN_ADDR="127.0.0.1:$port" \
    TENANTD_HEALTH_INTERVAL_MS=200 \
    "${tls_env[@]}" \
    "$bin" serve >"$workdir/server.log" 2>&1 &
  server_pid=$!
  log "started tenantd serve (pid $server_pid) on 127.0.0.1:$port${TLS_ENV:+ (TLS; health on $health_port)}"

  if ! wait_ready "127.0.0.1:$health_port" "$server_pid"; then
    log "server log:" >&2
    tail -n 50 "$workdir/server.log" >&2
    return 1
  fi

  # 5. The walkthrough.
  local status=0
  "$python" "$here/walkthrough.py" --target "127.0.0.1:$port" --token "$token" "$@" || status=$?
  if [ "$status" -ne 0 ]; then
    log "walkthrough failed (exit $status); server log:" >&2
    tail -n 50 "$workdir/server.log" >&2
  fi
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  return "$status"
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # host:port pid
  "$python" - "$1" "$2" <<'EOF'
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
}

run_once "$db"

# 6. The same over mutual TLS, with certificates made here: the server's for localhost, the
#    client's from the same CA.
tls="$workdir/tls"
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=run.sh test CA" \
  -keyout "$tls/ca.key" -out "$tls/ca.crt" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign 2>/dev/null
for leaf in server client; do
  usage=$([ "$leaf" = server ] && echo serverAuth || echo clientAuth)
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$tls/$leaf.key" -out "$tls/$leaf.csr" 2>/dev/null
  openssl x509 -req -in "$tls/$leaf.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 1 \
    -extfile <(printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=%s\n' "$usage") -out "$tls/$leaf.crt" 2>/dev/null
done
TLS_ENV="TENANTD_TLS_CERT_FILE=$tls/server.crt TENANTD_TLS_KEY_FILE=$tls/server.key TENANTD_TLS_CLIENT_CA_FILE=$tls/ca.crt" \
  run_once "${db}_tls" --tls-ca-file "$tls/ca.crt" --tls-cert-file "$tls/client.crt" --tls-key-file "$tls/client.key" \
  --tls-server-name localhost
