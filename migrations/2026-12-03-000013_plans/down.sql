DELETE FROM tenantd_table_distribution WHERE table_name = 'tenant_quota_usage'::regclass;
DROP TABLE tenant_quota_usage;
DROP INDEX tenants_plan_idx;
ALTER TABLE tenants DROP COLUMN limit_overrides;
ALTER TABLE tenants DROP COLUMN plan;
DELETE FROM tenantd_table_distribution WHERE table_name = 'plans'::regclass;
DROP TABLE plans;
