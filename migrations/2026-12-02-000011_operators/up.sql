-- Why: platform callers become named operators, so the audit trail says who acted and one
-- person's access can be revoked without a restart. An operator belongs to no tenant: like
-- the tenant registry, this is a global table without RLS, read before any tenant is known.
-- Only the SHA-256 of the key's secret is stored. Operators are revoked, never deleted, so
-- the audit events that name them keep resolving: the app role gets no DELETE grant.
-- Who created and who revoked each operator is recorded on the row (`bootstrap` or
-- `operator:<id>`): operator management has no tenant whose audit trail could hold it.
CREATE TABLE operators (
    id uuid PRIMARY KEY,
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    role text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    create_time timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL CHECK (created_by = 'bootstrap' OR created_by LIKE 'operator:%'),
    revoke_time timestamptz,
    revoked_by text CHECK (revoked_by = 'bootstrap' OR revoked_by LIKE 'operator:%'),
    CHECK ((revoke_time IS NULL) = (revoked_by IS NULL))
);

ALTER TABLE operators OWNER TO tenantd_owner;
GRANT SELECT, INSERT, UPDATE ON operators TO tenantd_app;

SELECT tenantd_distribute_registry_table('operators');

-- Audit events now name the operator (`operator`, with its id) or the bootstrap token
-- (`bootstrap`). `platform` stays allowed: events written before this migration keep it.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_actor_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_type_check
    CHECK (actor_type IN ('platform', 'bootstrap', 'operator', 'api_key'));
