-- Distributed tables are not undistributed here (undistribute_table is a deliberate,
-- operator-run step on a cluster); on plain PostgreSQL nothing was distributed.
DROP FUNCTION tenantd_distribute_tenant_table(regclass);
DROP FUNCTION tenantd_distribute_registry_table(regclass);
DROP TABLE tenantd_table_distribution;
-- The setting is cluster-wide, like the role: other databases of a Citus cluster that
-- still run tenantd will report NOT_SERVING until it is set again.
ALTER ROLE tenantd_app RESET citus.propagate_set_commands;
