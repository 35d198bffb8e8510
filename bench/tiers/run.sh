#!/usr/bin/env bash
# Isolation-tier benchmarks (decision 0018), on a fresh database of the PostgreSQL at
# $PGHOST:$PGPORT (default 127.0.0.1:5432, superuser postgres), dropped at the end:
#  1. the policy forms: a forced sequential scan of 5,000 rows, plain vs wrapped policy;
#  2. per-request cost: the tenant transaction of a pooled tenant vs a schema tenant
#     (pipelined, as tenantd sends it), random tenants out of 90 of each, interleaved;
#  3. `tenantd migrate` over 250, 500 and 1,000 schema tenants whose schemas are behind.
# Usage: bench/tiers/run.sh [SECONDS per pgbench phase, default 10] [TENANTD binary]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-10}
tenantd=${2:-../../target/debug/tenantd}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432}
admin="psql -U postgres -v ON_ERROR_STOP=1 -qAt"
fresh() {
  $admin -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  TENANTD_MIGRATION_DATABASE_URL="postgres://postgres@$PGHOST:$PGPORT/$1" "$tenantd" migrate >/dev/null 2>&1
}
db=tiers_bench
fresh $db

if [ "${SKIP_POLICY:-}" = "" ]; then
echo "## 1. policy forms, forced seq scan of 5,000 rows (pgbench -T $seconds, 1 client)"
$admin -d $db <<'SQL'
CREATE TABLE policy_bench (tenant_id uuid NOT NULL, id int NOT NULL, note text NOT NULL, PRIMARY KEY (tenant_id, id));
INSERT INTO policy_bench SELECT '00000000-0000-7000-8000-900000000001', n, 'row ' || n FROM generate_series(1, 5000) n;
ALTER TABLE policy_bench OWNER TO tenantd_owner;
ALTER TABLE policy_bench ENABLE ROW LEVEL SECURITY;
ALTER TABLE policy_bench FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON policy_bench
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
GRANT SELECT ON policy_bench TO tenantd_app;
ANALYZE policy_bench;
SQL
for form in plain wrapped plain wrapped; do
  if [ $form = plain ]; then expr="tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid"
  else expr="tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)"; fi
  $admin -d $db -c "ALTER POLICY tenant_isolation ON policy_bench USING ($expr) WITH CHECK ($expr)"
  unset_rows=$(psql -U tenantd_app -d $db -qAt -c "SELECT count(*) FROM policy_bench")
  empty_rows=$(psql -U tenantd_app -d $db -qAt -c "SET app.tenant_id = ''" -c "SELECT count(*) FROM policy_bench")
  set_rows=$(psql -U tenantd_app -d $db -qAt -f seqscan.sql | sed -n 1p)
  tps=$(pgbench -U tenantd_app -n -T "$seconds" -c 1 -f seqscan.sql $db 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  echo "$form: tps=$tps rows(set)=$set_rows rows(unset)=$unset_rows rows('')=$empty_rows"
done

fi
echo "## 2. per request: pooled vs schema tenant transaction (pipelined, 4 clients, -T $seconds)"
$admin -d $db -v count=90 -f seed.sql
scripts=$(mktemp -d)
trap 'rm -rf "$scripts"' EXIT
for n in $(seq 1 90); do
  suffix=$(printf '%011d' "$n")
  pooled=00000000-0000-7000-8000-1$suffix schema=00000000-0000-7000-8000-2$suffix
  sed "s/@TENANT_ID@/$pooled/g; /@ROUTE@/d" transaction.sql >"$scripts/pooled-$n.sql"
  sed "s/@TENANT_ID@/$schema/g; s/@ROUTE@/SET LOCAL search_path = \"tenant_000000000000700080002$suffix\", public;/" \
    transaction.sql >"$scripts/schema-$n.sql"
done
for round in 1 2; do
  for tier in pooled schema; do
    args=()
    for file in "$scripts/$tier"-*.sql; do args+=(-f "$file"); done
    tps=$(pgbench -U tenantd_app -n -M extended -T "$seconds" -c 4 -j 2 "${args[@]}" $db 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "round $round $tier: tps=$tps"
  done
done
$admin -d postgres -c "DROP DATABASE $db"

echo "## 3. tenantd migrate over N schema tenants whose schemas are behind (parallelism 4)"
for count in 250 500 1000; do
  db=tiers_bench_$count
  fresh $db
  $admin -d $db -v count=$count -f seed.sql
  $admin -d $db -c "UPDATE tenants SET schema_version = '20261203000013' WHERE isolation_tier = 'schema'"
  start=$(date +%s.%N)
  TENANTD_MIGRATION_DATABASE_URL="postgres://postgres@$PGHOST:$PGPORT/$db" "$tenantd" migrate >/tmp/tiers-migrate-$count.log 2>&1
  end=$(date +%s.%N)
  behind=$($admin -d $db -c "SELECT count(*) FROM tenants WHERE isolation_tier = 'schema' AND schema_version <> '20261203000014'")
  rerun_start=$(date +%s.%N)
  TENANTD_MIGRATION_DATABASE_URL="postgres://postgres@$PGHOST:$PGPORT/$db" "$tenantd" migrate >/dev/null 2>&1
  rerun_end=$(date +%s.%N)
  echo "$count schemas: $(echo "$end - $start" | bc) s, still behind: $behind, rerun (all current): $(echo "$rerun_end - $rerun_start" | bc) s"
  $admin -d postgres -c "DROP DATABASE $db"
done
