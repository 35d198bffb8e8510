-- Why: the global tenant registry. It is not tenant-scoped: the control plane and tenant
-- resolution read it by id or slug before any tenant is known, so it has no RLS policy.
-- Tenants are never physically deleted (soft delete keeps their slug reserved), so the
-- app role gets no DELETE grant.
CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    slug text NOT NULL CONSTRAINT tenants_slug_key UNIQUE
        CONSTRAINT tenants_slug_format CHECK (slug ~ '^[a-z][a-z0-9-]{2,62}$'),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    state text NOT NULL CHECK (state IN ('active', 'suspended', 'deleted')),
    labels jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    -- Bumped by every update; the etag is derived from it.
    revision bigint NOT NULL DEFAULT 1,
    CHECK ((state = 'deleted') = (delete_time IS NOT NULL))
);

ALTER TABLE tenants OWNER TO tenantd_owner;
GRANT SELECT, INSERT, UPDATE ON tenants TO tenantd_app;
