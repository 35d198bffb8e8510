BEGIN;
SET LOCAL app.tenant_id = '00000000-0000-7000-8000-900000000001';
SET LOCAL enable_indexscan = off;
SET LOCAL enable_bitmapscan = off;
SET LOCAL enable_indexonlyscan = off;
SELECT count(*) FROM policy_bench WHERE note <> '';
COMMIT;
