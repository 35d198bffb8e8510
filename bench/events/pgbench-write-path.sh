#!/usr/bin/env bash
# The write-path cost of the event-stream designs of decision 0015, side by side in one run:
# a mutation (UPDATE of a random row) plus its event insert, as
#   plain      the audit insert as before,
#   xid        with the transaction_id column and index (chosen),
#   xidnotify  plus pg_notify in the same transaction (rejected),
#   seq        a per-tenant counter row incremented under its lock (rejected).
# Usage: bench/events/pgbench-write-path.sh [postgres superuser URL host] (default 127.0.0.1)
# Needs pgbench; creates and drops the scratch database events_bench_scratch.
set -euo pipefail
host="${1:-127.0.0.1}"
here="$(cd "$(dirname "$0")" && pwd)"
psql=(psql -h "$host" -U postgres -v ON_ERROR_STOP=1 -q)
"${psql[@]}" -c "DROP DATABASE IF EXISTS events_bench_scratch" -c "CREATE DATABASE events_bench_scratch"
"${psql[@]}" -d events_bench_scratch <<'SQL'
CREATE TABLE ev_plain (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(), create_time timestamptz NOT NULL DEFAULT now(), action text NOT NULL, details jsonb NOT NULL DEFAULT '{}', PRIMARY KEY (tenant_id, id));
CREATE TABLE ev_xid (LIKE ev_plain INCLUDING ALL, transaction_id bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint));
CREATE INDEX ON ev_xid (tenant_id, transaction_id, id);
CREATE TABLE ev_seq (LIKE ev_plain INCLUDING ALL, seq bigint NOT NULL);
CREATE INDEX ON ev_seq (tenant_id, seq);
CREATE TABLE heads (tenant_id uuid PRIMARY KEY, seq bigint NOT NULL);
INSERT INTO heads VALUES ('00000000-0000-0000-0000-000000000001', 0);
CREATE TABLE work (tenant_id uuid, id int, v int, PRIMARY KEY (tenant_id, id));
INSERT INTO work SELECT '00000000-0000-0000-0000-000000000001', g, 0 FROM generate_series(1,100000) g;
SQL
for round in 1 2; do
  for script in plain xid xidnotify seq; do
    tps=$(pgbench -h "$host" -U postgres -n -c 8 -j 2 -T 10 -f "$here/$script.sql" events_bench_scratch 2>&1 | grep -E '^tps' | awk '{print $3}')
    echo "round $round  $script  tps=$tps"
  done
done
"${psql[@]}" -c "DROP DATABASE events_bench_scratch"
