#!/usr/bin/env bash
# Rate limits measured (decision 0017): the limiter's cost on Ping, overshoot under
# concurrency, and the noisy-neighbour p99 (examples/ratelimit_bench.rs).
#
# Starts a Redis of its own on a free port, creates and migrates a database on the PostgreSQL
# at $PGHOST:$PGPORT (default 127.0.0.1:5432, superuser $PGUSER, default postgres), starts
# `tenantd serve` on a free port, runs the bench, and cleans everything up.
#
# Usage: bench/ratelimit.sh [--profile release|dev] [bench arguments...]
#   e.g. bench/ratelimit.sh --profile release --duration 5 --rounds 3
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
profile=release
if [ "${1:-}" = "--profile" ]; then profile=$2; shift 2; fi
dir=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build --locked --profile "$profile" --bin tenantd --example ratelimit_bench
pg_host=${PGHOST:-127.0.0.1} pg_port=${PGPORT:-5432} pg_user=${PGUSER:-postgres}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port) port=$(free_port)
database="tenantd_bench_rl_$$"
token="bench-token-$$"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no >/dev/null &
redis_pid=$!
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  kill "$redis_pid" 2>/dev/null || true
  psql -q -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
}
trap cleanup EXIT
psql -q -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -c "CREATE DATABASE $database"
"$dir/tenantd" migrate --migration-database-url "postgres://$pg_user@$pg_host:$pg_port/$database" >/dev/null
TENANTD_LOG=warn RUST_LOG=warn "$dir/tenantd" serve --listen-addr "127.0.0.1:$port" \
  --database-url "postgres://tenantd_app@$pg_host:$pg_port/$database" \
  --redis-url "redis://127.0.0.1:$redis_port" --platform-token "$token" >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
sleep 1
echo "# bench/ratelimit.sh --profile $profile $*  ($(nproc) cores, $(date -u +%FT%TZ))"
"$dir/examples/ratelimit_bench" --server "http://127.0.0.1:$port" --token "$token" \
  "$@"
