\set r random(1, 100000)
BEGIN;
UPDATE work SET v = v + 1 WHERE tenant_id = '00000000-0000-0000-0000-000000000001' AND id = :r;
WITH h AS (UPDATE heads SET seq = seq + 1 WHERE tenant_id = '00000000-0000-0000-0000-000000000001' RETURNING seq) INSERT INTO ev_seq (tenant_id, action, seq) SELECT '00000000-0000-0000-0000-000000000001', 'user.update', seq FROM h;
COMMIT;
