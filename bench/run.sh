#!/usr/bin/env bash
# tenantd against its physical limit, side by side, in one run on one machine (issue 5).
#
# Builds tenantd and the bench examples, starts a throwaway PostgreSQL (with
# pg_stat_statements) and Redis on free loopback ports, migrates and seeds, starts
# `tenantd serve` as the app role, then runs, in rounds:
#   a    pgbench GetUser transaction (clients = pool), waiting for each statement and
#        pipelined (one round trip), vs tenantd GetUser (same concurrency, loadgen)
#   lat  concurrency 1 (p50 vs pgbench p50) and concurrency 32 (p99, p99/p50)
#   h    the same with h2load (nghttp2-client) as a light gRPC driver: GetUser at the pool's
#        concurrency and at 32, Ping; h2load repeats one request, so its pgbench anchors
#        read that one user. grpc-status of every call is checked in tenantd's metrics
#        (h2load counts HTTP 200 as success). Skipped, with a message, without h2load.
#   b    pgbench insert, and insert + audit event, vs tenantd CreateUser
#   c    bare tonic echo server Ping vs tenantd DiagnosticsService/Ping
#   d    GetUser over 10 tenants vs over 10,000 tenants (100k users in each set)
#   e    statements per read and per write, from pg_stat_statements, and round trips per
#        read and per write, from tenantd's socket calls to PostgreSQL (strace; skipped,
#        with a message, without strace or ptrace)
#   f    tenantd VmRSS, sampled during every tenantd phase
#   g    process start to readiness "" SERVING, migrations current
# and prints a table of ratios (bench/report.py). Benchmarks are not tests: nothing here
# asserts a speed. Results (JSON lines and the table) go to --out.
#
# Usage: bench/run.sh [options]
#   --smoke              ~1 s per phase, one round, small seed, debug build, no phase h
#                        unless --phases asks for it (for CI)
#   --profile P          cargo profile: release (default) or dev (default with --smoke)
#   --pool N             tenantd pool size = pgbench clients = concurrency (default 16)
#   --duration S         measured seconds per phase (default 10)
#   --warmup S           warm-up seconds before each phase (default 3)
#   --long-duration S    measured seconds of phase d (default 35, longer than the
#                        30 s tenant cache TTL, so cache refreshes are included)
#   --rounds R           rounds; the table shows medians (default 3)
#   --connections N      loadgen HTTP/2 connections, 0 = one per worker (default 0)
#   --phases LIST        comma-separated subset of a,lat,h,b,c,d,e,g (default all; with
#                        --smoke all but h)
#   --no-build           use binaries already built
#   --tenantd BIN        tenantd binary to measure (default: the one built)
#   --compare BIN        also measure a second tenantd binary (B) in every tenantd phase,
#                        interleaved with A; the table then shows B/A
#   --compare-env 'K=V ...'  extra environment of B (B defaults to A's binary)
#   --traces             B is A with OpenTelemetry traces on (OTEL_TRACES_EXPORTER=otlp),
#                        exporting every span to examples/otlp_sink, a local OTLP/gRPC
#                        receiver that discards them: the table's B/A is the cost of tracing
#   --out DIR            results directory (default target/bench/<time>)
#   --hold               at the end, keep PostgreSQL, Redis and the servers up until
#                        interrupted (prints how to reach them), for exploring by hand
set -euo pipefail

command_line="bench/run.sh${*:+ $*}"
repo=$(cd "$(dirname "$0")/.." && pwd)
bench="$repo/bench"
smoke=0 profile="" pool=16 duration=10 warmup=3 long_duration=35 rounds=3 connections=0
phases="" build=1 hold=0 tenantd_a="" tenantd_b="" compare_env="" traces=0 out=""
small_tenants=10 small_users=10000 large_tenants=10000 large_users=10 stmt_reads=2000 start_repeats=5

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --profile) profile=$2; shift ;;
    --pool) pool=$2; shift ;;
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --long-duration) long_duration=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --connections) connections=$2; shift ;;
    --phases) phases=$2; shift ;;
    --no-build) build=0 ;;
    --tenantd) tenantd_a=$2; shift ;;
    --compare) tenantd_b=$2; shift ;;
    --compare-env) compare_env=$2; shift ;;
    --traces) traces=1 ;;
    --out) out=$2; shift ;;
    --hold) hold=1 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$smoke" = 1 ]; then
  duration=1 warmup=0.5 long_duration=1 rounds=1 small_users=1000 large_users=1
  stmt_reads=200 start_repeats=1 profile=${profile:-dev}
  # h2load is not on CI machines, and the smoke run stays short; --phases h asks for it.
  [ -n "$phases" ] || echo "bench: smoke: skipping phase h (h2load); --phases a,lat,h,... runs it" >&2
  phases=${phases:-a,lat,b,c,d,e,g}
fi
phases=${phases:-a,lat,h,b,c,d,e,g}
profile=${profile:-release}
has_phase() { [[ ",$phases," == *",$1,"* ]]; }
compare=0
if [ -n "$tenantd_b" ] || [ -n "$compare_env" ] || [ "$traces" = 1 ]; then compare=1; fi

target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$profile" in
  dev) bin_dir="$target_dir/debug" ;;
  *) bin_dir="$target_dir/$profile" ;;
esac
if [ "$build" = 1 ]; then
  echo "bench: cargo build --profile $profile --examples --bin tenantd" >&2
  (cd "$repo" && cargo build --locked --profile "$profile" --examples --bin tenantd)
fi
tenantd_a=${tenantd_a:-$bin_dir/tenantd}
tenantd_b=${tenantd_b:-$tenantd_a}
loadgen="$bin_dir/examples/loadgen"
echo_server="$bin_dir/examples/echo_server"
otlp_sink="$bin_dir/examples/otlp_sink"
for binary in "$tenantd_a" "$tenantd_b" "$loadgen" "$echo_server" "$otlp_sink"; do
  [ -x "$binary" ] || { echo "run.sh: $binary is missing (build it, or drop --no-build)" >&2; exit 1; }
done
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pg_bin/initdb" ] || { echo "run.sh: no PostgreSQL server binaries under /usr/lib/postgresql" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "run.sh: redis-server is missing" >&2; exit 1; }

out=${out:-$target_dir/bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"
work=$(mktemp -d /tmp/tenantd-bench.XXXXXX)
clk_tck=$(getconf CLK_TCK)
cores=$(nproc)
jobs=$(( pool < cores ? pool : cores ))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_port=$(free_port) redis_port=$(free_port) echo_port=$(free_port)
port_a=$(free_port) port_b=$(free_port) metrics_port_a=$(free_port) metrics_port_b=$(free_port)
pgdata="$work/pg"
token="bench-platform-token"
app_url="postgres://tenantd_app@127.0.0.1:$pg_port/bench"
admin_url="postgres://postgres@127.0.0.1:$pg_port/bench"

declare -A server_pid=()
redis_pid="" echo_pid="" sink_pid="" as_pg=() hold_pid=""
cleanup() {
  set +e
  [ -n "$hold_pid" ] && kill "$hold_pid" 2>/dev/null
  for pid in "${server_pid[@]}" $echo_pid $sink_pid; do kill "$pid" 2>/dev/null; done
  for pid in "${server_pid[@]}" $echo_pid $sink_pid; do wait "$pid" 2>/dev/null; done
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  [ -f "$pgdata/postmaster.pid" ] && "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

use_h2load=0
if has_phase h; then
  if command -v h2load >/dev/null; then use_h2load=1
  else log "h2load is not installed (apt-get install nghttp2-client): skipping phase h"; fi
fi

# ---- throwaway PostgreSQL and Redis -------------------------------------------------
log "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port, Redis on :$redis_port, work dir $work"
# PostgreSQL refuses to run as root; CI and these machines run as root.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(runuser -u postgres --)
  chmod 755 "$work"
  mkdir -p "$pgdata" && chown postgres "$pgdata"
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
cat >> "$pgdata/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pgdata'
max_connections = 200
shared_buffers = 256MB
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track_utility = on
# Both sides of every comparison commit on this server alike. Without a WAL flush per
# commit the comparison measures CPU and round trips, not the shared disk.
synchronous_commit = off
EOF
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w start >/dev/null
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --logfile "$work/redis.log" &
redis_pid=$!
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
psql_admin -d postgres -c "CREATE DATABASE bench"
psql_admin -d bench -c "CREATE EXTENSION pg_stat_statements"
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

log "migrating and seeding ($small_tenants x $small_users and $large_tenants x $large_users users)"
TENANTD_MIGRATION_DATABASE_URL=$admin_url "$tenantd_a" migrate >"$work/migrate.log" 2>&1
psql_admin -d bench -v small_tenants="$small_tenants" -v small_users="$small_users" \
  -v large_tenants="$large_tenants" -v large_users="$large_users" -f "$bench/seed.sql" >/dev/null
a_last=$small_tenants b_first=$((small_tenants + 1)) b_last=$((small_tenants + large_tenants))
w_first=$((b_last + 1)) w_last=$((b_last + 10))
targets() { # first_tenant last_tenant users_per_tenant (0: tenant ids only) > file
  psql_admin -d bench -At -F ' ' -c "SELECT md5('t' || t)::uuid, CASE WHEN $3 > 0 THEN md5('u' || t || '-' || u)::uuid::text ELSE '' END
    FROM generate_series($1, $2) AS t, generate_series(1, greatest($3, 1)) AS u"
}
targets 1 "$a_last" "$small_users" > "$work/targets_a.txt"
targets "$b_first" "$b_last" "$large_users" > "$work/targets_b.txt"
targets "$w_first" "$w_last" 0 > "$work/targets_w.txt"

# ---- servers ------------------------------------------------------------------------
metrics_port_of() { if [ "$1" = A ]; then echo "$metrics_port_a"; else echo "$metrics_port_b"; fi; }
start_tenantd() { # name binary port [extra env...] ; sets server_pid[name]
  local name=$1 binary=$2 port=$3; shift 3
  # The metrics port only serves what every RPC records anyway; phase h reads the gRPC
  # codes there.
  env TENANTD_LISTEN_ADDR="127.0.0.1:$port" TENANTD_DATABASE_URL="$app_url" \
    TENANTD_REDIS_URL="redis://127.0.0.1:$redis_port" TENANTD_PLATFORM_TOKEN="$token" \
    TENANTD_DB_POOL_SIZE="$pool" TENANTD_METRICS_ADDR="127.0.0.1:$(metrics_port_of "$name")" \
    "$@" "$binary" serve >>"$work/tenantd-$name.log" 2>&1 &
  server_pid[$name]=$!
}
stop_tenantd() {
  local name=$1
  kill "${server_pid[$name]}" 2>/dev/null || true
  wait "${server_pid[$name]}" 2>/dev/null || true
  unset "server_pid[$name]"
}
wait_serving() { "$loadgen" --addr "http://127.0.0.1:$1" --rpc health-wait --timeout 30 >/dev/null; }
if [ "$traces" = 1 ]; then
  # Every RPC sampled (the default parentbased_always_on with no caller's traceparent).
  sink_port=$(free_port)
  "$otlp_sink" --listen-addr "127.0.0.1:$sink_port" >"$work/otlp-sink.log" 2>&1 &
  sink_pid=$!
  compare_env="$compare_env OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$sink_port"
fi
read -r -a env_b <<< "$compare_env"
servers=(A)
[ "$compare" = 1 ] && servers=(A B)
port_of() { if [ "$1" = A ]; then echo "$port_a"; else echo "$port_b"; fi; }
start_server() { # A|B
  if [ "$1" = A ]; then start_tenantd A "$tenantd_a" "$port_a"; else start_tenantd B "$tenantd_b" "$port_b" "${env_b[@]}"; fi
}
for server in "${servers[@]}"; do start_server "$server"; done
"$echo_server" --listen-addr "127.0.0.1:$echo_port" >"$work/echo.log" 2>&1 &
echo_pid=$!
for server in "${servers[@]}"; do wait_serving "$(port_of "$server")"; done

# ---- CPU accounting (clock ticks) ---------------------------------------------------
ticks_of() { # pids... : utime + stime + cutime + cstime, summed
  local total=0 pid value
  for pid in "$@"; do
    value=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + ${value:-0}))
  done
  echo "$total"
}
pg_ticks() { local postmaster; postmaster=$(head -n 1 "$pgdata/postmaster.pid"); ticks_of "$postmaster" $(pgrep -P "$postmaster"); }
# Waits until no PostgreSQL backend is exiting. A backend that exits between reading the
# postmaster's ticks and its own would be counted nowhere: its CPU moves into the
# postmaster's children's time only when it is reaped. pgbench ends all its connections
# at exit, and h2load drops requests in flight, whose pooled connections tenantd discards.
settle_pg() {
  local postmaster before after stable=0
  postmaster=$(head -n 1 "$pgdata/postmaster.pid")
  before=$(pgrep -P "$postmaster" | sort | tr '\n' ' ')
  for _ in $(seq 1 40); do
    sleep 0.05
    after=$(pgrep -P "$postmaster" | sort | tr '\n' ' ')
    if [ "$after" = "$before" ]; then stable=$((stable + 1)); [ "$stable" -ge 3 ] && return; else stable=0; fi
    before=$after
  done
}
server_ticks() { if [ "$1" = echo ]; then ticks_of "$echo_pid"; elif [ -n "$1" ]; then ticks_of "${server_pid[$1]}"; else echo 0; fi; }
pid_of_server() { if [ "$1" = echo ]; then echo "$echo_pid"; else echo "${server_pid[$1]}"; fi; }

machine_ticks() { # "busy total" jiffies of the whole machine, from /proc/stat
  awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6; exit }' /proc/stat
}
machine_args() { # before after : report.py arguments for the machine's CPU
  local busy0 total0 busy1 total1
  read -r busy0 total0 <<< "$1"; read -r busy1 total1 <<< "$2"
  echo "--machine-busy-ticks $((busy1 - busy0)) --machine-total-ticks $((total1 - total0)) --cores $cores"
}

record() { python3 "$bench/report.py" "$@" >> "$results"; }

pgbench_scripts() { # template first_tenant last_tenant > one script path per line
  # SET takes no bind parameter, so each tenant gets its own copy of the template with its
  # id in the text (see bench/pgbench/get_user.sql); pgbench picks one per transaction.
  local template=$1 first=$2 last=$3
  local dir="$work/pgbench/${template%.sql}-$first-$last" number tenant_id
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    psql_admin -d bench -At -F ' ' -c "SELECT n, md5('t' || n)::uuid FROM generate_series($first, $last) AS n" |
      while read -r number tenant_id; do
        sed -e "s/@TENANT_ID@/$tenant_id/g" -e "s/@T@/$number/g" "$bench/pgbench/$template" > "$dir/$number.sql"
      done
  fi
  ls "$dir"/*.sql
}

run_pgbench() { # phase round script clients tmin tmax umax
  local phase=$1 round=$2 script=$3 clients=$4 tmin=$5 tmax=$6 umax=$7
  local threads=$(( clients < cores ? clients : cores ))
  local args=(-h 127.0.0.1 -p "$pg_port" -U tenantd_app -n -M prepared -c "$clients" -j "$threads" -D umax="$umax")
  local file
  while read -r file; do args+=(-f "$file"); done < <(pgbench_scripts "$script" "$tmin" "$tmax")
  args+=(bench)
  log "round $round: $phase (pgbench $script, $clients clients)"
  pgbench "${args[@]}" -T "$(python3 -c "import math; print(max(1, math.ceil($warmup)))")" >/dev/null 2>&1
  mkdir -p "$work/pgl"
  rm -f "$work/pgl/"*
  local pg0 pg1 redis0 redis1
  local machine0 machine1
  machine0=$(machine_ticks) pg0=$(pg_ticks) redis0=$(ticks_of "$redis_pid")
  ( pgbench "${args[@]}" -T "$(python3 -c "import math; print(max(1, math.ceil($duration)))")" \
      -l --log-prefix="$work/pgl/log" >"$work/pgbench.out" 2>&1; times >"$work/times" )
  settle_pg
  pg1=$(pg_ticks) redis1=$(ticks_of "$redis_pid") machine1=$(machine_ticks)
  # shellcheck disable=SC2046
  record pgbench $(machine_args "$machine0" "$machine1") --phase "$phase" --round "$round" --clients "$clients" --stdout "$work/pgbench.out" \
    --logs "$work/pgl" --times "$work/times" --clk-tck "$clk_tck" --pg-ticks $((pg1 - pg0)) \
    --redis-ticks $((redis1 - redis0))
}

start_rss_sampler() { # pid: samples its VmRSS every 0.5 s after the warm-up, into $work/rss
  local pid=$1
  rm -f "$work/rss" "$work/rss.stop"
  ( sleep "$warmup"; while [ ! -e "$work/rss.stop" ] && kill -0 "$pid" 2>/dev/null; do
      awk '/^VmRSS/ {print $2}' "/proc/$pid/status" >> "$work/rss" 2>/dev/null; sleep 0.5; done ) &
  rss_sampler=$!
}
stop_rss_sampler() { touch "$work/rss.stop"; wait "$rss_sampler" 2>/dev/null || true; }
trim_logs() {
  # The per-RPC log lines are not needed; keep the files from growing across phases.
  local name
  for name in "${!server_pid[@]}"; do tail -n 50 "$work/tenantd-$name.log" > "$out/tenantd-$name.log.tail"; : > "$work/tenantd-$name.log"; done
}

run_loadgen() { # phase round server(A|B|echo) rpc concurrency targets_file [loadgen args...]
  local phase=$1 round=$2 server=$3 rpc=$4 concurrency=$5 targets_file=$6; shift 6
  local port pid
  if [ "$server" = echo ]; then port=$echo_port; else port=$(port_of "$server"); fi
  pid=$(pid_of_server "$server")
  log "round $round: $phase on $server ($rpc, concurrency $concurrency)"
  local pg0 pg1 s0 s1 redis0 redis1
  start_rss_sampler "$pid"
  local machine0 machine1
  machine0=$(machine_ticks) pg0=$(pg_ticks) s0=$(server_ticks "$server") redis0=$(ticks_of "$redis_pid")
  ( "$loadgen" --addr "http://127.0.0.1:$port" --rpc "$rpc" --concurrency "$concurrency" \
      --connections "$connections" --warmup "$warmup" --duration "$duration" \
      --targets "$targets_file" --platform-token "$token" --label "$phase" "$@" >"$work/loadgen.json"; \
      times >"$work/times" )
  settle_pg
  pg1=$(pg_ticks) s1=$(server_ticks "$server") redis1=$(ticks_of "$redis_pid") machine1=$(machine_ticks)
  stop_rss_sampler
  # shellcheck disable=SC2046
  record loadgen $(machine_args "$machine0" "$machine1") --phase "$phase" --round "$round" --server "$server" --json "$work/loadgen.json" \
    --times "$work/times" --clk-tck "$clk_tck" --pg-ticks $((pg1 - pg0)) --server-ticks $((s1 - s0)) \
    --redis-ticks $((redis1 - redis0)) --rss "$work/rss"
  trim_logs
}

# tenantd's RPC counters by method and gRPC code (tenantd_rpc_requests_total lines).
scrape_rpcs() { curl -fsS "http://127.0.0.1:$(metrics_port_of "$1")/metrics" | grep '^tenantd_rpc_requests_total{' || true; }

# The gRPC request bodies for h2load: the 5-byte gRPC prefix (not compressed, big-endian
# length) and the protobuf message. GetUserRequest is field 1 (string) = the user id.
write_grpc_body() { # file [user_id]
  python3 - "$@" <<'PY'
import struct, sys
user = sys.argv[2].encode() if len(sys.argv) > 2 else b""
message = (b"\x0a" + bytes([len(user)]) + user) if user else b""
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(message)) + message)
PY
}

run_h2load() { # phase round server(A|B) rpc(get-user|ping) concurrency
  local phase=$1 round=$2 server=$3 rpc=$4 concurrency=$5
  local port pid path body method tenant user
  port=$(port_of "$server") pid=$(pid_of_server "$server")
  # h2load sends one body with one set of headers: tenant 1, user 1 (bench/seed.sql).
  read -r tenant user < <(psql_admin -d bench -At -F ' ' -c "SELECT md5('t1')::uuid, md5('u1-1')::uuid")
  case "$rpc" in
    get-user) path=/tenantd.v1.UserService/GetUser method=GetUser body=$work/get_user.grpc
      [ -f "$body" ] || write_grpc_body "$body" "$user" ;;
    ping) path=/tenantd.v1.DiagnosticsService/Ping method=Ping body=$work/ping.grpc
      [ -f "$body" ] || write_grpc_body "$body" ;;
  esac
  local threads=$(( concurrency < cores ? concurrency : cores ))
  log "round $round: $phase on $server (h2load $method, concurrency $concurrency)"
  # One call by curl first, which shows the grpc-status trailer (the counters below check
  # every call of the run).
  local checked=unchecked
  if command -v curl >/dev/null; then
    checked=$(curl -sS --http2-prior-knowledge -o /dev/null -D - -H 'content-type: application/grpc' \
      -H 'te: trailers' -H "authorization: Bearer $token" -H "x-tenant-id: $tenant" --data-binary "@$body" \
      "http://127.0.0.1:$port$path" | tr -d '\r' | awk -F': ' 'tolower($1) == "grpc-status" { print $2 }') \
      || checked=curl-failed
  fi
  local pg0 pg1 s0 s1 redis0 redis1 machine0 machine1
  scrape_rpcs "$server" > "$work/rpcs.before"
  start_rss_sampler "$pid"
  machine0=$(machine_ticks) pg0=$(pg_ticks) s0=$(server_ticks "$server") redis0=$(ticks_of "$redis_pid")
  # -m 1: one request in flight per connection, one connection per client (closed loop,
  # like loadgen and pgbench).
  rm -f "$work/h2load.log" # h2load appends to it
  ( h2load -c "$concurrency" -t "$threads" -m 1 \
      -D "$(python3 -c "print(max(1, round($duration * 1000)))")ms" \
      --warm-up-time "$(python3 -c "print(max(1, round($warmup * 1000)))")ms" \
      -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $token" \
      -H "x-tenant-id: $tenant" -d "$body" --log-file "$work/h2load.log" \
      "http://127.0.0.1:$port$path" >"$work/h2load.out" 2>&1; times >"$work/times" )
  settle_pg
  pg1=$(pg_ticks) s1=$(server_ticks "$server") redis1=$(ticks_of "$redis_pid") machine1=$(machine_ticks)
  stop_rss_sampler
  scrape_rpcs "$server" > "$work/rpcs.after"
  # shellcheck disable=SC2046
  record h2load $(machine_args "$machine0" "$machine1") --phase "$phase" --round "$round" --server "$server" \
    --concurrency "$concurrency" --stdout "$work/h2load.out" --log "$work/h2load.log" --method "$method" \
    --curl-grpc-status "${checked:-none}" \
    --rpcs-before "$work/rpcs.before" --rpcs-after "$work/rpcs.after" --times "$work/times" \
    --clk-tck "$clk_tck" --pg-ticks $((pg1 - pg0)) --server-ticks $((s1 - s0)) \
    --redis-ticks $((redis1 - redis0)) --rss "$work/rss"
  # h2load stops with requests in flight, and tenantd discards a connection whose
  # transaction was cut off: reopen and warm the pool before the next phase.
  "$loadgen" --addr "http://127.0.0.1:$port" --rpc get-user --concurrency "$pool" --targets "$work/targets_a.txt" \
    --platform-token "$token" --warmup 0 --duration 1 >/dev/null
  trim_logs
}

for_servers() { # round, then a command run once per tenantd server, order alternating by round
  local round=$1; shift
  local order=("${servers[@]}")
  if [ "$compare" = 1 ] && [ $((round % 2)) = 0 ]; then order=(B A); fi
  local server
  for server in "${order[@]}"; do "$@" "$server"; done
}
td() { # phase round rpc concurrency targets [args...] server  (server last, for for_servers)
  local server=${!#}
  local args=("${@:1:$#-1}")
  run_loadgen "${args[0]}" "${args[1]}" "$server" "${args[2]}" "${args[3]}" "${args[4]}" "${args[@]:5}"
}

h2() { # phase round rpc concurrency server  (server last, for for_servers)
  run_h2load "$1" "$2" "$5" "$3" "$4"
}

# ---- the rounds ---------------------------------------------------------------------
for round in $(seq 1 "$rounds"); do
  if has_phase a; then
    run_pgbench pg_read_cP "$round" get_user.sql "$pool" 1 "$a_last" "$small_users"
    run_pgbench pg_read_pipe_cP "$round" get_user_pipeline.sql "$pool" 1 "$a_last" "$small_users"
    for_servers "$round" td td_get_cP "$round" get-user "$pool" "$work/targets_a.txt"
  fi
  if has_phase lat; then
    run_pgbench pg_read_c1 "$round" get_user.sql 1 1 "$a_last" "$small_users"
    run_pgbench pg_read_pipe_c1 "$round" get_user_pipeline.sql 1 1 "$a_last" "$small_users"
    for_servers "$round" td td_get_c1 "$round" get-user 1 "$work/targets_a.txt"
    run_pgbench pg_read_c32 "$round" get_user.sql 32 1 "$a_last" "$small_users"
    for_servers "$round" td td_get_c32 "$round" get-user 32 "$work/targets_a.txt"
  fi
  if has_phase h && [ "$use_h2load" = 1 ]; then
    # h2load repeats one request: its anchors read the same one user (tenant 1, user 1).
    run_pgbench pg_read_one_cP "$round" get_user.sql "$pool" 1 1 1
    run_pgbench pg_read_pipe_one_cP "$round" get_user_pipeline.sql "$pool" 1 1 1
    for_servers "$round" h2 td_get_h2_cP "$round" get-user "$pool"
    for_servers "$round" h2 td_get_h2_c32 "$round" get-user 32
    for_servers "$round" h2 td_ping_h2_cP "$round" ping "$pool"
  fi
  if has_phase c; then
    run_loadgen echo_ping_cP "$round" echo echo-ping "$pool" "$work/targets_a.txt"
    for_servers "$round" td td_ping_cP "$round" ping "$pool" "$work/targets_a.txt"
  fi
  if has_phase d; then
    saved=$duration; duration=$long_duration
    for_servers "$round" td td_get_10t_long "$round" get-user "$pool" "$work/targets_a.txt" --prewarm
    for_servers "$round" td td_get_10kt_long "$round" get-user "$pool" "$work/targets_b.txt" --prewarm
    duration=$saved
  fi
  if has_phase b; then
    run_pgbench pg_insert_cP "$round" create_user.sql "$pool" "$w_first" "$w_last" 1
    run_pgbench pg_insert_audit_cP "$round" create_user_audit.sql "$pool" "$w_first" "$w_last" 1
    for_servers "$round" td td_create_cP "$round" create-user "$pool" "$work/targets_w.txt"
  fi
done

# ---- e: statements and round trips per call -----------------------------------------
count_round_trips() { # server: round trips per GetUser and per CreateUser, at tenantd's sockets
  local server=$1 port pid rpc targets_file calls=$(( stmt_reads < 500 ? stmt_reads : 500 )) tracer
  port=$(port_of "$server") pid=$(pid_of_server "$server")
  if ! command -v strace >/dev/null; then
    log "strace is not installed: round trips not counted (tests/api/transaction.rs counts them at the socket)"
    return
  fi
  for rpc in get-user create-user; do
    targets_file="$work/targets_a.txt"; [ "$rpc" = create-user ] && targets_file="$work/targets_w.txt"
    # A fresh server, so that the trace sees each statement prepared (which names the
    # prepared statements, and shows what the first call on a new connection costs), with
    # its tenants resolved (the resolution's lookups are not part of a call).
    stop_tenantd "$server"; start_server "$server"; wait_serving "$port"
    pid=$(pid_of_server "$server")
    "$loadgen" --addr "http://127.0.0.1:$port" --rpc ping --concurrency 1 --targets "$targets_file" \
      --platform-token "$token" --requests 1 --prewarm >/dev/null
    strace -f -qq -yy -xx -s 65536 -e trace=sendto,sendmsg,write,writev,recvfrom,recvmsg,read,readv \
      -p "$pid" -o "$work/strace.txt" 2>"$work/strace.err" &
    tracer=$!
    # Wait until every thread of tenantd is traced (or strace gave up: no ptrace here).
    for _ in $(seq 1 100); do
      kill -0 "$tracer" 2>/dev/null || break
      grep -q '^TracerPid:[[:space:]]*0$' "/proc/$pid"/task/*/status 2>/dev/null || break
      sleep 0.05
    done
    if ! kill -0 "$tracer" 2>/dev/null; then
      log "strace could not attach ($(head -c 200 "$work/strace.err")): round trips not counted"
      return
    fi
    log "round trips on $server: $calls $rpc calls under strace, one at a time"
    "$loadgen" --addr "http://127.0.0.1:$port" --rpc "$rpc" --concurrency 1 --targets "$targets_file" \
      --platform-token "$token" --requests "$calls" >"$work/rt.json"
    kill -INT "$tracer" 2>/dev/null; wait "$tracer" 2>/dev/null || true
    record roundtrips --server "$server" --rpc "$rpc" --strace "$work/strace.txt" --pg-port "$pg_port" --calls "$calls"
  done
}

if has_phase e; then
  for server in "${servers[@]}"; do
    port=$(port_of "$server")
    log "statements per call on $server ($stmt_reads GetUser, then $stmt_reads CreateUser calls)"
    "$loadgen" --addr "http://127.0.0.1:$port" --rpc ping --concurrency "$pool" --targets "$work/targets_a.txt" \
      --platform-token "$token" --requests 100 --prewarm >/dev/null
    "$loadgen" --addr "http://127.0.0.1:$port" --rpc ping --concurrency "$pool" --targets "$work/targets_w.txt" \
      --platform-token "$token" --requests 100 --prewarm >/dev/null
    # Open every pooled connection first, so their set-up statements are not counted.
    "$loadgen" --addr "http://127.0.0.1:$port" --rpc get-user --concurrency "$pool" --targets "$work/targets_a.txt" \
      --platform-token "$token" --warmup 0 --duration 1 >/dev/null
    for rpc in get-user create-user; do
      targets_file="$work/targets_a.txt"; [ "$rpc" = create-user ] && targets_file="$work/targets_w.txt"
      psql_admin -d bench -Atc "SELECT pg_stat_statements_reset()" >/dev/null
      "$loadgen" --addr "http://127.0.0.1:$port" --rpc "$rpc" --concurrency "$pool" --targets "$targets_file" \
        --platform-token "$token" --requests "$stmt_reads" >"$work/stmt.json"
      psql_admin -d bench -At -F $'\t' -c "SELECT s.calls, regexp_replace(s.query, '\s+', ' ', 'g')
        FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
        WHERE r.rolname = 'tenantd_app' ORDER BY s.calls DESC" >"$work/stmt.tsv"
      record statements --server "$server" --rpc "$rpc" --json "$work/stmt.json" --tsv "$work/stmt.tsv"
    done
    count_round_trips "$server"
  done
fi

# ---- g: start to SERVING ------------------------------------------------------------
if has_phase g; then
  for server in "${servers[@]}"; do
    for mode in serve serve-migrate; do
      for repeat in $(seq 1 "$start_repeats"); do
        stop_tenantd "$server"
        port=$(port_of "$server")
        extra=()
        [ "$mode" = serve-migrate ] && extra=(TENANTD_MIGRATE=true TENANTD_MIGRATION_DATABASE_URL="$admin_url")
        [ "$server" = B ] && extra+=("${env_b[@]}")
        binary=$tenantd_a; [ "$server" = B ] && binary=$tenantd_b
        started=$(date +%s%N)
        start_tenantd "$server" "$binary" "$port" "${extra[@]}"
        "$loadgen" --addr "http://127.0.0.1:$port" --rpc health-wait --since-unix-ns "$started" \
          --label "$mode" >"$work/start.json"
        record start --server "$server" --mode "$mode" --repeat "$repeat" --json "$work/start.json"
      done
    done
  done
fi

# ---- the table ----------------------------------------------------------------------
machine=$(printf '%s cores, %s, PostgreSQL %s, %s' "$cores" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  "$("$pg_bin/postgres" --version | awk '{print $3}')" "$(uname -r)")
python3 "$bench/report.py" table --results "$results" --pool "$pool" --machine "$machine" \
  --command "$command_line" --compare "$compare" | tee "$out/table.md"
if [ "$traces" = 1 ]; then
  # Proof that B exported: the receiver's running total.
  log "otlp_sink received: $(grep '^spans' "$work/otlp-sink.log" | tail -n 1 || echo 'no spans')"
  cp "$work/otlp-sink.log" "$out/otlp-sink.log"
fi
log "results in $out"
if [ "$hold" = 1 ]; then
  {
    echo "export PGHOST=127.0.0.1 PGPORT=$pg_port PGDATABASE=bench   # psql -U postgres | -U tenantd_app"
    echo "export TOKEN=$token TARGETS_A=$work/targets_a.txt TARGETS_B=$work/targets_b.txt TARGETS_W=$work/targets_w.txt"
    for server in "${servers[@]}"; do echo "export TENANTD_$server=http://127.0.0.1:$(port_of "$server") PID_$server=${server_pid[$server]}"; done
    echo "export ECHO=http://127.0.0.1:$echo_port REDIS_PORT=$redis_port"
  } | tee "$out/hold.env"
  log "holding; environment in $out/hold.env; interrupt (kill $$) to tear down"
  sleep infinity &
  hold_pid=$!
  wait "$hold_pid" || true
fi
