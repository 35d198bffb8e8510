DROP FUNCTION tenantd_route_write(uuid);
DROP FUNCTION tenantd_move_lock_key(uuid);
DELETE FROM tenantd_table_distribution WHERE table_name = 'operations'::regclass;
DROP TABLE operations;
