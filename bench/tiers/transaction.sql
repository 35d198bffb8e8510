-- The tenant transaction of a read as tenantd pipelines it; run.sh writes one copy per
-- tenant, @TENANT_ID@ filled in, and for a schema tenant @ROUTE@ becomes its search-path
-- statement (for a pooled tenant, nothing).
\startpipeline
BEGIN;
SET LOCAL app.tenant_id = '@TENANT_ID@';
@ROUTE@
SELECT count(*) FROM users WHERE tenant_id = '@TENANT_ID@';
COMMIT;
\endpipeline
