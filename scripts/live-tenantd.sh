# A live tenantd for the end-to-end checks (examples/python/run.sh, examples/typescript/run.sh,
# scripts/readme-run.sh). Source this file, then call
#
#   live_tenantd_start <name> [<platform token>]
#
# which creates a fresh PostgreSQL database (tenantd_test_<name>_..., a prefix .ci/run drops
# if a run is interrupted), migrates it with `tenantd migrate`, starts `tenantd serve` as the
# app role on a free loopback port in the background, and waits until health "" is SERVING
# (asked with `tenantd health`). It sets:
#   live_addr     host:port of the server (127.0.0.1:<port>)
#   live_token    the platform token (the second argument, or a random one)
#   live_log      the server's log file
# On exit (normal, error or signal) the server is stopped and the database dropped. A
# script that sources this file must not set its own EXIT trap; `live_tenantd_fail <message>`
# prints the message and the end of the server log, and exits 1.
#
# Settings (all optional):
#   TENANTD_BIN            tenantd binary (default target/debug/tenantd)
#   TENANTD_TEST_PG_HOST   PostgreSQL host (127.0.0.1)
#   TENANTD_TEST_PG_PORT   PostgreSQL port (5432)
#   TENANTD_TEST_PG_ADMIN  superuser that creates and migrates the database (postgres);
#                          it and tenantd_app must be able to log in without a password
#   TENANTD_TEST_REDIS_URL Redis URL (redis://127.0.0.1:6379); tenantd also runs without it
#   LIVE_TENANTD_ENV       more NAME=VALUE settings for `tenantd serve`, space-separated (for
#                          example TENANTD_TLS_*); with TENANTD_TLS_CERT_FILE among them, the
#                          readiness wait asks a plaintext health-only port opened for it
#
# `live_tenantd_stop` stops the server and drops its database early, so that a script can
# start another one (the EXIT trap then has nothing left to do).

live_bin=${TENANTD_BIN:-target/debug/tenantd}
live_pg_host=${TENANTD_TEST_PG_HOST:-127.0.0.1}
live_pg_port=${TENANTD_TEST_PG_PORT:-5432}
live_pg_admin=${TENANTD_TEST_PG_ADMIN:-postgres}
live_redis_url=${TENANTD_TEST_REDIS_URL:-redis://127.0.0.1:6379}
live_name=live
live_db=""
live_pid=""
live_workdir=""
live_addr=""
live_token=""
live_log=""
live_remove_on_exit=() # paths a sourcing script wants removed on exit

live_say() { echo "$live_name: $*"; }

# A free loopback port. (Another process could take it before tenantd binds it; tenantd then
# exits and the readiness wait says so.)
live_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

live_psql_admin() {
  psql -h "$live_pg_host" -p "$live_pg_port" -U "$live_pg_admin" -d postgres -v ON_ERROR_STOP=1 -Atq "$@"
}

live_tenantd_stop() {
  if [ -n "$live_pid" ] && kill -0 "$live_pid" 2>/dev/null; then
    live_say "stopping tenantd (pid $live_pid)"
    kill -TERM "$live_pid" 2>/dev/null || true
    wait "$live_pid" 2>/dev/null || true
  fi
  live_pid=""
  if [ -n "$live_db" ]; then
    live_psql_admin -c "DROP DATABASE IF EXISTS $live_db WITH (FORCE)" >/dev/null 2>&1 && live_say "dropped database $live_db"
  fi
  live_db=""
  [ -n "$live_workdir" ] && rm -rf "$live_workdir"
  live_workdir=""
}

live_tenantd_cleanup() {
  local status=$?
  live_tenantd_stop
  [ ${#live_remove_on_exit[@]} -gt 0 ] && rm -rf "${live_remove_on_exit[@]}"
  exit "$status"
}

live_tenantd_fail() {
  live_say "$*" >&2
  if [ -n "$live_log" ] && [ -s "$live_log" ]; then
    live_say "server log:" >&2
    tail -n 50 "$live_log" >&2
  fi
  exit 1
}

live_tenantd_start() {
  live_name=$1
  live_token=${2:-"live-token-$RANDOM$RANDOM$RANDOM"}
  [ -x "$live_bin" ] || { live_say "no tenantd binary at $live_bin (build it with cargo build, or set TENANTD_BIN)" >&2; exit 2; }
  trap live_tenantd_cleanup EXIT
  trap 'exit 130' INT TERM
  live_workdir=$(mktemp -d)
  live_log="$live_workdir/server.log"

  live_db="tenantd_test_${live_name//[^a-z0-9]/_}_$$_$RANDOM"
  live_say "creating database $live_db"
  live_psql_admin -c "CREATE DATABASE $live_db"
  TENANTD_MIGRATION_DATABASE_URL="postgres://$live_pg_admin@$live_pg_host:$live_pg_port/$live_db" \
    "$live_bin" migrate >"$live_workdir/migrate.log" 2>&1 \
    || { cat "$live_workdir/migrate.log" >&2; live_tenantd_fail "tenantd migrate failed"; }
  live_say "migrated"

  live_addr="127.0.0.1:$(live_free_port)"
  local health_addr=$live_addr
  local -a extra_env=()
  read -r -a extra_env <<<"${LIVE_TENANTD_ENV:-}"
  if [[ " ${LIVE_TENANTD_ENV:-} " == *" TENANTD_TLS_CERT_FILE="* ]]; then
    health_addr="127.0.0.1:$(live_free_port)"
    extra_env+=("TENANTD_HEALTH_LISTEN_ADDR=$health_addr")
  fi
  env TENANTD_DATABASE_URL="postgres://tenantd_app@$live_pg_host:$live_pg_port/$live_db" \
  TENANTD_REDIS_URL="$live_redis_url" \
  TENANTD_PLATFORM_TOKEN="$live_token" \
  TENANTD_LISTEN_ADDR="$live_addr" \
  TENANTD_HEALTH_INTERVAL_MS=200 \
  "${extra_env[@]}" \
    "$live_bin" serve >"$live_log" 2>&1 &
  live_pid=$!
  live_say "started tenantd serve (pid $live_pid) on $live_addr${LIVE_TENANTD_ENV:+ (health on $health_addr)}"

  local deadline=$((SECONDS + 60))
  until "$live_bin" health --server "$health_addr" >/dev/null 2>&1; do
    kill -0 "$live_pid" 2>/dev/null || live_tenantd_fail "tenantd exited before becoming ready"
    [ "$SECONDS" -lt "$deadline" ] || live_tenantd_fail 'health "" not SERVING after 60s'
    sleep 0.2
  done
  live_say 'health "" is SERVING'
}
