#!/bin/bash
# Decision 0016: the cost of the exact quota counter per create, in one run, three variants:
#   a = CreateUser's transaction with no quota statement (SET LOCAL, user insert, audit insert):
#       what a tenant *without* a cap runs now (the uncapped path sends no counter statement);
#   b = a plus the counter upsert on every create: what every tenant paid before counters
#       were kept only while a cap applies (the old statement of src/db/quotas.rs);
#   c = a plus today's capped upsert on a trusted counter (src/db/quotas.rs `Charge`: the
#       `counted_at >= trusted_from` check; cap set high enough never to refuse).
# Interleaved a/b/c, ROUNDS rounds (default 3) of SECONDS s (default 10), 8 clients, on 8
# tenants ("spread") and on one tenant (one hot counter row).
# Usage: bench/pgbench/quota_counter.sh DATABASE [ROUNDS] [SECONDS]  (a database migrated by
# `tenantd migrate`; connects to 127.0.0.1:5432 as postgres to seed, as tenantd_app to measure).
set -euo pipefail
db=${1:?database}
rounds=${2:-3}
seconds=${3:-10}
dir=$(mktemp -d)
psql -h 127.0.0.1 -U postgres -d "$db" -qc "INSERT INTO tenants (id, slug, display_name, state)
  SELECT md5('t' || g)::uuid, 'bench-' || g, 'b', 'active' FROM generate_series(1,8) g ON CONFLICT DO NOTHING"
# Trusted counters for c (recounted now, long after the limits changed).
psql -h 127.0.0.1 -U postgres -d "$db" -qc "INSERT INTO tenant_quota_usage (tenant_id, quota, used, counted_at)
  SELECT md5('t' || g)::uuid, 'users', 0, now() FROM generate_series(1,8) g
  ON CONFLICT (tenant_id, quota) DO UPDATE SET counted_at = now()"
user="INSERT INTO users (tenant_id, id, email, display_name, role) VALUES (md5('t' || :t)::uuid, gen_random_uuid(), 'pg-' || gen_random_uuid() || '@bench.example', '', 'member') RETURNING tenant_id, id \gset"
audit="INSERT INTO audit_events (tenant_id, id, actor_type, actor_id, action, resource_type, resource_id, request_id, details) VALUES (md5('t' || :t)::uuid, gen_random_uuid(), 'platform', '', 'user.create', 'user', :id, gen_random_uuid()::text, '{}');"
old_counter="INSERT INTO tenant_quota_usage (tenant_id, quota, used) VALUES (md5('t' || :t)::uuid, 'users', 1) ON CONFLICT (tenant_id, quota) DO UPDATE SET used = tenant_quota_usage.used + excluded.used WHERE tenant_quota_usage.used + excluded.used <= 9223372036854775807 RETURNING used;"
capped_counter="INSERT INTO tenant_quota_usage (tenant_id, quota, used, counted_at) VALUES (md5('t' || :t)::uuid, 'users', 0, '-infinity') ON CONFLICT (tenant_id, quota) DO UPDATE SET used = tenant_quota_usage.used + 1 WHERE tenant_quota_usage.counted_at >= '2000-01-01'::timestamptz AND tenant_quota_usage.used + 1 <= 1000000000000 RETURNING used, counted_at >= '2000-01-01'::timestamptz;"
for t in 1 2 3 4 5 6 7 8; do
  id=$(psql -h 127.0.0.1 -U postgres -d "$db" -tAc "SELECT md5('t' || $t)::uuid")
  printf '%s\n' "\\set t $t" "BEGIN;" "SET LOCAL app.tenant_id = '$id';" "$user" "$audit" "COMMIT;" > "$dir/a$t.sql"
  printf '%s\n' "\\set t $t" "BEGIN;" "SET LOCAL app.tenant_id = '$id';" "$user" "$old_counter" "$audit" "COMMIT;" > "$dir/b$t.sql"
  printf '%s\n' "\\set t $t" "BEGIN;" "SET LOCAL app.tenant_id = '$id';" "$user" "$capped_counter" "$audit" "COMMIT;" > "$dir/c$t.sql"
done
run() { pgbench -h 127.0.0.1 -U tenantd_app -n -M prepared -c 8 -j 2 -T "$seconds" "$@" "$db" 2>&1 | grep -E '^tps' ; }
for round in $(seq 1 "$rounds"); do
  for v in a b c; do
    files=(); for t in 1 2 3 4 5 6 7 8; do files+=(-f "$dir/$v$t.sql"); done
    echo "round $round spread $v $(run "${files[@]}")"
  done
  for v in a b c; do echo "round $round one-tenant $v $(run -f "$dir/${v}1.sql")"; done
done
