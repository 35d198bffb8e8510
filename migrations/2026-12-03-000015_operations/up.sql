-- Why: work that outlives an RPC (moving a tenant between tiers; later export and purge) is a
-- google.longrunning Operation. It must survive a restart and run on exactly one replica, so
-- it is a row: a worker claims it with a lease (`lease_owner`, `lease_expire_time`, taken
-- with FOR UPDATE SKIP LOCKED), renews the lease while it runs, and a lease that expired (its
-- replica crashed) lets any worker claim it again. Like the tenant registry this is a
-- platform table without RLS: operations are reached by platform callers only, and an
-- operation may concern no tenant. Its tenant column is `subject_tenant_id`, not `tenant_id`:
-- it names what the operation acts on and holds no tenant data. At most one unfinished
-- operation acts on a tenant at a time.
CREATE TABLE operations (
    id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('move_tenant')),
    subject_tenant_id uuid,
    request jsonb NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    phase text NOT NULL DEFAULT 'pending' CHECK (length(phase) BETWEEN 1 AND 64),
    -- {"percent": 0..100, "details": {...}}: what the kind's handler reports.
    progress jsonb NOT NULL DEFAULT '{"percent": 0, "details": {}}',
    cancel_requested boolean NOT NULL DEFAULT false,
    -- Once done: {"response": {...}} or {"error": {"code": <grpc code>, "reason": "...",
    -- "message": "..."}} (never database text).
    result jsonb CHECK (result IS NULL OR (result ? 'response') <> (result ? 'error')),
    lease_owner uuid,
    lease_expire_time timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    created_by text NOT NULL CHECK (created_by = 'bootstrap' OR created_by LIKE 'operator:%'),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    done_time timestamptz,
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (done_time IS NOT NULL)),
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (result IS NOT NULL))
);

-- The worker's claim scans unfinished operations only.
CREATE INDEX operations_unfinished ON operations (create_time, id) WHERE state IN ('pending', 'running');
CREATE UNIQUE INDEX operations_one_unfinished_per_tenant ON operations (subject_tenant_id)
    WHERE state IN ('pending', 'running');

ALTER TABLE operations OWNER TO tenantd_owner;
GRANT SELECT, INSERT, UPDATE, DELETE ON operations TO tenantd_app;

SELECT tenantd_distribute_registry_table('operations');

-- Moving a tenant between tiers (decision 0019) pauses that tenant's writes, and only its
-- writes, for the cutover: every write transaction of a tenant first calls
-- tenantd_route_write, which takes the tenant's move lock shared (writes never wait for each
-- other) and routes the rest of the transaction by the tier the registry records *now*, so a
-- write that waited out a cutover lands on the new tier, never the old one. The cutover takes
-- the lock exclusively. The key is the tenant id's last 64 bits (random in a UUIDv7).
CREATE FUNCTION tenantd_move_lock_key(tenant uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ('x' || right(replace(tenant::text, '-', ''), 16))::bit(64)::bigint;

-- The schema name is built as tenantd's schema_name() builds it (`tenant_` and 32 hex
-- digits; tests/api/moves.rs checks they agree), quoted with %I. set_config(..., true) is
-- transaction-local, exactly like SET LOCAL.
CREATE FUNCTION tenantd_route_write(tenant uuid) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    tier text;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(public.tenantd_move_lock_key(tenant));
    SELECT t.isolation_tier INTO tier FROM public.tenants t WHERE t.id = tenant;
    IF tier = 'schema' THEN
        PERFORM set_config('search_path', format('%I, public', 'tenant_' || replace(tenant::text, '-', '')), true);
    ELSE
        PERFORM set_config('search_path', 'public', true);
    END IF;
END
$fn$;

ALTER FUNCTION tenantd_move_lock_key(uuid) OWNER TO tenantd_owner;
ALTER FUNCTION tenantd_route_write(uuid) OWNER TO tenantd_owner;
REVOKE EXECUTE ON FUNCTION tenantd_route_write(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantd_route_write(uuid) TO tenantd_app;
