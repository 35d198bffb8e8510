-- Why: documents, the second tenant-scoped resource. The owner foreign key includes
-- tenant_id, so a document can only name a user of its own tenant: another tenant's user id
-- fails exactly like one that does not exist. Deleting a user who owns documents is refused
-- rather than orphaning or deleting them.
CREATE TABLE documents (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    id uuid NOT NULL,
    title text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    content bytea NOT NULL,
    content_sha256 bytea NOT NULL CHECK (length(content_sha256) = 32),
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    owner_user_id uuid NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    revision bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT documents_owner_fkey FOREIGN KEY (tenant_id, owner_user_id) REFERENCES users (tenant_id, id)
);

-- Listing by owner, and the foreign key check when a user is deleted.
CREATE INDEX documents_tenant_id_owner_user_id_idx ON documents (tenant_id, owner_user_id, id);

ALTER TABLE documents OWNER TO tenantd_owner;
ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON documents
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE, DELETE ON documents TO tenantd_app;
