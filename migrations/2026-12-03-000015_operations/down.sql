DELETE FROM tenantd_table_distribution WHERE table_name = 'operations'::regclass;
DROP TABLE operations;
