-- Events recorded as `bootstrap` or `operator` are relabelled `platform` (what every
-- platform caller was before), so the old check holds again; the operator ids they carried
-- stay in actor_id. audit_events is append-only for the app role, not for migrations.
UPDATE audit_events SET actor_type = 'platform' WHERE actor_type IN ('bootstrap', 'operator');
ALTER TABLE audit_events DROP CONSTRAINT audit_events_actor_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_type_check CHECK (actor_type IN ('platform', 'api_key'));

DELETE FROM tenantd_table_distribution WHERE table_name = 'operators'::regclass;
DROP TABLE operators;
