\set r random(1, 100000)
BEGIN;
UPDATE work SET v = v + 1 WHERE tenant_id = '00000000-0000-0000-0000-000000000001' AND id = :r;
WITH e AS (INSERT INTO ev_xid (tenant_id, action) VALUES ('00000000-0000-0000-0000-000000000001', 'user.update') RETURNING tenant_id, transaction_id) SELECT pg_notify('tenantd_events', tenant_id::text || ' ' || transaction_id::text) FROM e;
COMMIT;
