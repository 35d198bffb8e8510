#!/usr/bin/env bash
# The event stream's numbers (decision 0015, docs/performance.md): delivery latency at a
# write rate, catch-up rate from a cold cursor, server RSS with many watchers and with a
# stalled one. Runs `tenantd serve` on a fresh database of the local PostgreSQL (trust auth,
# superuser postgres) and Redis, then examples/events_bench.rs against it.
# Usage: bench/events/run.sh [--profile dev|release] [events_bench flags...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
profile=dev
if [ "${1:-}" = "--profile" ]; then profile=$2; shift 2; fi
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
(cd "$repo" && cargo build --locked --profile "$profile" --bin tenantd --example events_bench >&2)
database="tenantd_events_bench_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $database"
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)"' EXIT
"$repo/target/$dir/tenantd" migrate --migration-database-url "postgres://postgres@127.0.0.1/$database" >&2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TENANTD_LOG_FORMAT=json RUST_LOG=warn "$repo/target/$dir/tenantd" serve --listen-addr "127.0.0.1:$port" \
  --database-url "postgres://tenantd_app@127.0.0.1/$database" --platform-token bench-token \
  --db-pool-size 16 --max-concurrent-streams 2000 >/dev/null 2>&1 &
server=$!
until "$repo/target/$dir/tenantd" health --server "127.0.0.1:$port" >/dev/null 2>&1; do sleep 0.2; done
"$repo/target/$dir/examples/events_bench" --server "http://127.0.0.1:$port" --token bench-token --pid "$server" \
  --admin-url "postgres://postgres@127.0.0.1/$database" "$@"
