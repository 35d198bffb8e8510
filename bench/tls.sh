#!/usr/bin/env bash
# TLS against plaintext, side by side in one run (issue 15): the same tenantd binary, database
# and Redis, served three ways at once: plaintext (P), TLS with an ECDSA P-256 certificate (E),
# TLS with an RSA 2048 certificate (R, cert-manager's default key). h2load drives
# DiagnosticsService/Ping (tenant resolution from the in-process cache: no database work, so
# the transport is most of the cost) in interleaved rounds:
#   rpc   per-RPC cost: 16 long-lived connections, one request in flight each; req/s
#   conn  handshake cost: every connection makes one RPC and closes (-n = -c = 64, repeated);
#         h2load's mean "time for connect" (TCP + TLS handshake) and connections/s
# Then the reload time: the certificate files of E replaced on disk, measured from the rename
# to the first handshake that presents the new certificate (openssl s_client in a loop), with
# the default and a short reload interval.
# Benchmarks are not tests: nothing here asserts a speed. Results go to stdout and --out.
#
# Usage: bench/tls.sh [--tenantd BIN] [--rounds R] [--requests N] [--out FILE]
# Needs: h2load (apt-get install nghttp2-client), openssl, psql, PostgreSQL on
# $TENANTD_TEST_PG_HOST:$TENANTD_TEST_PG_PORT (127.0.0.1:5432, superuser postgres, trust),
# Redis at $TENANTD_TEST_REDIS_URL (redis://127.0.0.1:6379).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$repo/target/release/tenantd rounds=3 requests=30000 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tenantd) bin=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --requests) requests=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "bench/tls.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
for tool in h2load openssl psql; do
  command -v "$tool" >/dev/null || { echo "bench/tls.sh: $tool is needed" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "bench/tls.sh: no tenantd at $bin (cargo build --release)" >&2; exit 2; }
pg_host=${TENANTD_TEST_PG_HOST:-127.0.0.1} pg_port=${TENANTD_TEST_PG_PORT:-5432}
redis_url=${TENANTD_TEST_REDIS_URL:-redis://127.0.0.1:6379}
token="bench-token-$RANDOM$RANDOM"
work=$(mktemp -d) db="tenantd_test_tlsbench_$$"
pids=()
log() { echo "tls.sh: $*" >&2; }
psql_admin() { psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq "$@"; }
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Certificates: one CA, an ECDSA and an RSA server certificate for localhost and 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=bench CA" \
  -keyout "$work/ca.key" -out "$work/ca.crt" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign 2>/dev/null
issue() { # name keyspec...
  local name=$1; shift
  openssl req -newkey "$@" -nodes -subj "/CN=localhost" -keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
  openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
    -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') \
    -out "$work/$name.crt" 2>/dev/null
}
issue ecdsa ec -pkeyopt ec_paramgen_curve:P-256
issue rsa rsa:2048
issue ecdsa2 ec -pkeyopt ec_paramgen_curve:P-256

psql_admin -c "CREATE DATABASE $db"
TENANTD_MIGRATION_DATABASE_URL="postgres://postgres@$pg_host:$pg_port/$db" "$bin" migrate >/dev/null 2>&1

serve() { # name port health_port [TLS env...]
  local name=$1 port=$2 health=$3; shift 3
  env TENANTD_DATABASE_URL="postgres://tenantd_app@$pg_host:$pg_port/$db" TENANTD_REDIS_URL="$redis_url" \
    TENANTD_PLATFORM_TOKEN="$token" TENANTD_LISTEN_ADDR="127.0.0.1:$port" \
    TENANTD_HEALTH_LISTEN_ADDR="127.0.0.1:$health" "$@" "$bin" serve >"$work/$name.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do
    "$bin" health --server "http://127.0.0.1:$health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "$name never became ready"; cat "$work/$name.log" >&2; exit 1
}
declare -A port
for server in P E R; do port[$server]=$(free_port); done
serve P "${port[P]}" "$(free_port)"
cp "$work/ecdsa.crt" "$work/e.crt"; cp "$work/ecdsa.key" "$work/e.key"
serve E "${port[E]}" "$(free_port)" TENANTD_TLS_CERT_FILE="$work/e.crt" TENANTD_TLS_KEY_FILE="$work/e.key"
serve R "${port[R]}" "$(free_port)" TENANTD_TLS_CERT_FILE="$work/rsa.crt" TENANTD_TLS_KEY_FILE="$work/rsa.key"

tenant=$(TENANTD_PLATFORM_TOKEN=$token "$bin" tenants create --server "http://127.0.0.1:${port[P]}" \
  --slug "bench-tls" --display-name "bench" -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
printf '\x00\x00\x00\x00\x00' >"$work/ping.grpc" # gRPC prefix of an empty PingRequest

url() { case $1 in P) echo "http://127.0.0.1:${port[P]}" ;; *) echo "https://127.0.0.1:${port[$1]}" ;; esac; }
h2() { # server clients requests
  h2load -c "$2" -n "$3" -m 1 -t 1 -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "authorization: Bearer $token" -H "x-tenant-id: $tenant" -d "$work/ping.grpc" \
    "$(url "$1")/tenantd.v1.DiagnosticsService/Ping" 2>&1
}
results=$work/results
for round in $(seq "$rounds"); do
  for server in P E R; do
    h2 "$server" 64 64 >/dev/null # warm-up: caches, connection pools
    output=$(h2 "$server" 16 "$requests")
    rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$output")
    ok=$(awk '/^status codes:/ { print $3 }' <<<"$output")
    echo "rpc $round $server $rps $ok" >>"$results"
    # Handshake cost: 10 x 64 fresh connections, one Ping each.
    for repeat in $(seq 10); do
      output=$(h2 "$server" 64 64)
      connect=$(awk '/^time for connect:/ { print $6 }' <<<"$output")
      cps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$output")
      echo "conn $round $server $connect $cps" >>"$results"
    done
  done
done

# Reload: replace E's files atomically (key, then certificate) and poll its handshake until it
# presents the new certificate's serial.
wanted=$(openssl x509 -in "$work/ecdsa2.crt" -noout -serial)
presented() { openssl s_client -connect "127.0.0.1:${port[E]}" -servername localhost -alpn h2 </dev/null 2>/dev/null \
  | openssl x509 -noout -serial 2>/dev/null; }
cp "$work/ecdsa2.key" "$work/e.key.new"; cp "$work/ecdsa2.crt" "$work/e.crt.new"
start=$(date +%s%N)
mv "$work/e.key.new" "$work/e.key"; mv "$work/e.crt.new" "$work/e.crt"
until [ "$(presented)" = "$wanted" ]; do sleep 0.01; done
echo "reload default-interval $(( ($(date +%s%N) - start) / 1000000 ))" >>"$results"

python3 - "$results" "$rounds" <<'PY' | tee ${out:+"$out"}
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def number(text):  # h2load's durations (103us, 2.44ms, 1.2s) in ms; plain numbers as they are
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)
def median(kind, server, column):
    return statistics.median(number(r[column]) for r in rows if r[0] == kind and r[2] == server)
print(f"rounds: {sys.argv[2]}; medians")
print("| | plaintext | TLS ECDSA P-256 | TLS RSA 2048 | ECDSA / plaintext | RSA / plaintext |")
print("|---|---|---|---|---|---|")
rps = {s: median("rpc", s, 3) for s in "PER"}
print(f"| Ping req/s, 16 connections | {rps['P']:.0f} | {rps['E']:.0f} | {rps['R']:.0f} | {rps['E']/rps['P']:.2f} | {rps['R']/rps['P']:.2f} |")
connect = {s: median("conn", s, 3) for s in "PER"}
print(f"| time for connect, ms (mean of 64) | {connect['P']:.2f} | {connect['E']:.2f} | {connect['R']:.2f} | {connect['E']/connect['P']:.1f} | {connect['R']/connect['P']:.1f} |")
cps = {s: median("conn", s, 4) for s in "PER"}
print(f"| new connections/s (1 Ping each) | {cps['P']:.0f} | {cps['E']:.0f} | {cps['R']:.0f} | {cps['E']/cps['P']:.2f} | {cps['R']/cps['P']:.2f} |")
for r in rows:
    if r[0] == "reload":
        print(f"reload: new certificate presented {r[2]} ms after the files were replaced (TENANTD_TLS_RELOAD_INTERVAL_MS 5000)")
print("status 2xx per rpc run:", ", ".join(f"{r[2]}:{r[4]}" for r in rows if r[0] == "rpc"))
PY
