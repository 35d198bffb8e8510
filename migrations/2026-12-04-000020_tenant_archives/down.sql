-- Why: undoes 000020 (tenant archives).
DELETE FROM operations WHERE kind IN ('export_tenant', 'import_tenant');
ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check
    CHECK (kind IN ('move_tenant', 'purge_tenant'));
DROP TABLE tenant_archive_chunks;
