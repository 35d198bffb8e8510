-- Why: the end of a tenant's life (issue 14, decision 0020). A deleted tenant is PURGING
-- while its rows are removed, then PURGED. The registry keeps a tombstone of a purged
-- tenant (its id, state and times) so that its id is never handed out again by accident
-- and an import can restore into it; everything that identified or described it (slug,
-- display name, labels, plan, overrides) is cleared, so its slug is released.
ALTER TABLE tenants DROP CONSTRAINT tenants_state_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_state_check
    CHECK (state IN ('provisioning', 'active', 'suspended', 'deleted', 'purging', 'purged'));

-- The unnamed check of 000002, `(state = 'deleted') = (delete_time IS NOT NULL)`.
ALTER TABLE tenants DROP CONSTRAINT tenants_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_delete_time_check
    CHECK ((state IN ('deleted', 'purging', 'purged')) = (delete_time IS NOT NULL));

ALTER TABLE tenants ADD COLUMN purge_time timestamptz;
ALTER TABLE tenants ADD CONSTRAINT tenants_purge_time_check CHECK ((state = 'purged') = (purge_time IS NOT NULL));

ALTER TABLE tenants ALTER COLUMN slug DROP NOT NULL;
ALTER TABLE tenants ALTER COLUMN display_name DROP NOT NULL;
ALTER TABLE tenants ADD CONSTRAINT tenants_tombstone_check
    CHECK ((state = 'purged') = (slug IS NULL) AND (state = 'purged') = (display_name IS NULL));
