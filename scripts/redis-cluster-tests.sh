#!/usr/bin/env bash
# The Redis suites against a Redis Cluster (decision 0017): starts a local three-master
# cluster (`redis-server --cluster-enabled yes` on free ports, `redis-cli --cluster create
# --cluster-replicas 0`), runs the integration tests that share Redis between servers
# (tenant cache, invalidation across replicas, API keys, the event stream's wake-ups, usage
# counts, a purge's key removal) with TENANTD_TEST_REDIS_URL naming it and
# TENANTD_TEST_REDIS_CLUSTER=1, then stops it. The failover is shown by tests/api/redis_cluster.rs (its own six-node cluster,
# in the ordinary test run).
#
# Usage: scripts/redis-cluster-tests.sh [extra cargo test filters...]
set -euo pipefail
cd "$(dirname "$0")/.."
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
pids=() nodes=() urls=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
for _ in 1 2 3; do
  # The bus port is given too: its default, port + 10000, may be past 65535.
  port=$(free_port) bus_port=$(free_port)
  (cd "$dir" && exec redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --cluster-enabled yes --cluster-port "$bus_port" --cluster-config-file "nodes-$port.conf" >/dev/null) &
  pids+=($!) nodes+=("127.0.0.1:$port") urls+=("redis://127.0.0.1:$port")
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
for node in "${nodes[@]}"; do
  for _ in $(seq 1 100); do
    redis-cli -p "${node##*:}" cluster info | grep -q cluster_state:ok && break
    sleep 0.1
  done
done
export TENANTD_TEST_REDIS_URL
TENANTD_TEST_REDIS_URL=$(IFS=,; echo "${urls[*]}")
export TENANTD_TEST_REDIS_CLUSTER=1
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(credentials:: identification:: tenants:: events:: usage purge::)
for filter in "${filters[@]}"; do
  cargo test --locked --test api "$filter"
done
