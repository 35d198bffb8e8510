#!/bin/bash
# Decision 0016: the cost of the exact quota counter per create. A = CreateUser's
# transaction as tenantd runs it (SET LOCAL, user insert, audit insert); B = the same plus the
# counter upsert of src/db/quotas.rs. Interleaved A/B, 3 rounds of 15 s, 8 clients, on 8 tenants
# ("spread") and on one tenant (one hot counter row).
# Usage: bench/pgbench/quota_counter.sh DATABASE   (a database migrated by `tenantd migrate`;
# connects to 127.0.0.1:5432 as postgres to seed and as tenantd_app to measure).
set -euo pipefail
db=${1:?database}
dir=$(mktemp -d)
psql -h 127.0.0.1 -U postgres -d "$db" -qc "INSERT INTO tenants (id, slug, display_name, state)
  SELECT md5('t' || g)::uuid, 'bench-' || g, 'b', 'active' FROM generate_series(1,8) g ON CONFLICT DO NOTHING"
user="INSERT INTO users (tenant_id, id, email, display_name, role) VALUES (md5('t' || :t)::uuid, gen_random_uuid(), 'pg-' || gen_random_uuid() || '@bench.example', '', 'member') RETURNING tenant_id, id \gset"
audit="INSERT INTO audit_events (tenant_id, id, actor_type, actor_id, action, resource_type, resource_id, request_id, details) VALUES (md5('t' || :t)::uuid, gen_random_uuid(), 'platform', '', 'user.create', 'user', :id, gen_random_uuid()::text, '{}');"
counter="INSERT INTO tenant_quota_usage (tenant_id, quota, used) VALUES (md5('t' || :t)::uuid, 'users', 1) ON CONFLICT (tenant_id, quota) DO UPDATE SET used = tenant_quota_usage.used + excluded.used WHERE tenant_quota_usage.used + excluded.used <= 9223372036854775807 RETURNING used;"
for t in 1 2 3 4 5 6 7 8; do
  id=$(psql -h 127.0.0.1 -U postgres -d "$db" -tAc "SELECT md5('t' || $t)::uuid")
  printf '%s\n' "\\set t $t" "BEGIN;" "SET LOCAL app.tenant_id = '$id';" "$user" "$audit" "COMMIT;" > "$dir/a$t.sql"
  printf '%s\n' "\\set t $t" "BEGIN;" "SET LOCAL app.tenant_id = '$id';" "$user" "$counter" "$audit" "COMMIT;" > "$dir/b$t.sql"
done
run() { pgbench -h 127.0.0.1 -U tenantd_app -n -M prepared -c 8 -j 2 -T 15 "$@" "$db" 2>&1 | grep -E '^tps' ; }
for round in 1 2 3; do
  for v in a b; do
    files=(); for t in 1 2 3 4 5 6 7 8; do files+=(-f "$dir/$v$t.sql"); done
    echo "round $round spread $v $(run "${files[@]}")"
  done
  for v in a b; do echo "round $round one-tenant $v $(run -f "$dir/${v}1.sql")"; done
done
