DELETE FROM tenantd_table_distribution WHERE table_name = 'tenant_settings'::regclass;
DROP TABLE tenant_settings;
