-- Roles are cluster-wide and other databases may use them: they are never dropped here.
REVOKE SELECT ON __diesel_schema_migrations FROM tenantd_app;
REVOKE USAGE ON SCHEMA public FROM tenantd_app;
