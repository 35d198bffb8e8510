-- Why: reverts 000016. Purged tenants' tombstones cannot go back to a state 000015 knows,
-- so they are removed with this migration's columns.
DELETE FROM tenants WHERE state = 'purged';
UPDATE tenants SET state = 'deleted' WHERE state = 'purging';
ALTER TABLE tenants DROP CONSTRAINT tenants_tombstone_check;
ALTER TABLE tenants ALTER COLUMN display_name SET NOT NULL;
ALTER TABLE tenants ALTER COLUMN slug SET NOT NULL;
ALTER TABLE tenants DROP CONSTRAINT tenants_purge_time_check;
ALTER TABLE tenants DROP COLUMN purge_time;
ALTER TABLE tenants DROP CONSTRAINT tenants_delete_time_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_check CHECK ((state = 'deleted') = (delete_time IS NOT NULL));
ALTER TABLE tenants DROP CONSTRAINT tenants_state_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_state_check
    CHECK (state IN ('provisioning', 'active', 'suspended', 'deleted'));
