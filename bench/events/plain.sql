\set r random(1, 100000)
BEGIN;
UPDATE work SET v = v + 1 WHERE tenant_id = '00000000-0000-0000-0000-000000000001' AND id = :r;
INSERT INTO ev_plain (tenant_id, action) VALUES ('00000000-0000-0000-0000-000000000001', 'user.update');
COMMIT;
