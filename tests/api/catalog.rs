//! The catalog gate: structural rules every tenant table must follow, checked against
//! PostgreSQL's catalog, so that a new table cannot silently skip RLS.

use crate::helpers::{connect, create_database, drop_database, migrate, pg_admin};

/// Registry tables: global indexes read across tenants, before any tenant is known
/// (resolution by domain or channel) or for all of them at once (which tenants wrote events
/// in a range of transactions, for the event sweep). Their `tenant_id` names the owner of
/// an identifier or of an event; they hold no tenant data, so they have no RLS. Adding a
/// table here is a design decision that must be argued in docs/decisions/ (0015 for
/// `event_transactions`).
const REGISTRY_TABLES: &[&str] = &["tenant_domains", "tenant_channel_bindings", "event_transactions"];

/// The policy expressions that fail closed, as PostgreSQL prints them: the plain form and the
/// wrapped form (an InitPlan evaluated once per statement, decision 0018). With the setting
/// missing (NULL) or reset ('') both compare to NULL and match no row.
const FAIL_CLOSED_POLICIES: &[&str] = &[
    "(tenant_id = (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid)",
    "(tenant_id = ( SELECT (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid AS \"nullif\"))",
];

/// Every rule violation in `database`, as readable sentences. Empty means the gate passes.
pub async fn gate_violations(database: &str) -> Vec<String> {
    let client = connect(&pg_admin(), database).await;
    let mut violations = Vec::new();

    // Tables with a tenant_id column: RLS enabled and forced, a policy with USING and WITH CHECK.
    let tables = client
        .query(
            "SELECT c.oid, CASE WHEN n.nspname = 'public' THEN c.relname::text ELSE n.nspname || '.' || c.relname END AS relname,
                    c.relrowsecurity, c.relforcerowsecurity,
                    EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid
                            AND p.polqual IS NOT NULL AND p.polwithcheck IS NOT NULL) AS has_policy,
                    NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid
                            AND (p.polqual IS NULL OR p.polwithcheck IS NULL)) AS all_policies_complete,
                    NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid
                            AND NOT (pg_get_expr(p.polqual, p.polrelid) = ANY ($2)
                                     AND pg_get_expr(p.polwithcheck, p.polrelid) = ANY ($2))) AS all_policies_fail_closed
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE (n.nspname = 'public' OR n.nspname ~ '^tenant_[0-9a-f]{32}$') AND c.relkind IN ('r', 'p') AND NOT (c.relname = ANY ($1))",
            &[&REGISTRY_TABLES, &FAIL_CLOSED_POLICIES],
        )
        .await
        .expect("tenant tables");
    for table in &tables {
        let name: String = table.get("relname");
        if !table.get::<_, bool>("relrowsecurity") {
            violations.push(format!("{name}: row-level security is not enabled"));
        }
        if !table.get::<_, bool>("relforcerowsecurity") {
            violations.push(format!("{name}: row-level security is not forced"));
        }
        if !table.get::<_, bool>("has_policy") || !table.get::<_, bool>("all_policies_complete") {
            violations.push(format!("{name}: needs a policy with both USING and WITH CHECK"));
        }
        if !table.get::<_, bool>("all_policies_fail_closed") {
            violations.push(format!("{name}: a policy is not the fail-closed tenant policy"));
        }
    }

    // Every tenant schema has every table a schema tenant keeps there: a missing one would
    // resolve to the shared table through the search path.
    let missing = client
        .query(
            "SELECT n.nspname || '.' || t.name AS missing
             FROM pg_namespace n CROSS JOIN unnest($1::text[]) AS t(name)
             WHERE n.nspname ~ '^tenant_[0-9a-f]{32}$'
               AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = t.name)",
            &[&tenantd::db::tenant_schema::TENANT_SCHEMA_TABLES],
        )
        .await
        .expect("tenant schema tables");
    for row in &missing {
        let name: String = row.get(0);
        violations.push(format!("{name}: missing from its tenant schema"));
    }

    // Every primary key and unique index of those tables includes tenant_id.
    let keys = client
        .query(
            "SELECT CASE WHEN n.nspname = 'public' THEN c.relname::text ELSE n.nspname || '.' || c.relname END AS table_name, i.relname AS index_name
             FROM pg_index x
             JOIN pg_class c ON c.oid = x.indrelid
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE (n.nspname = 'public' OR n.nspname ~ '^tenant_[0-9a-f]{32}$') AND (x.indisunique OR x.indisprimary)
               AND NOT (a.attnum = ANY (x.indkey::int2[])) AND NOT (c.relname = ANY ($1))",
            &[&REGISTRY_TABLES],
        )
        .await
        .expect("keys");
    for key in &keys {
        let table: String = key.get("table_name");
        let index: String = key.get("index_name");
        violations.push(format!("{table}: key {index} does not include tenant_id"));
    }

    // Every foreign key of those tables includes tenant_id.
    let foreign_keys = client
        .query(
            "SELECT CASE WHEN n.nspname = 'public' THEN c.relname::text ELSE n.nspname || '.' || c.relname END AS table_name, k.conname
             FROM pg_constraint k
             JOIN pg_class c ON c.oid = k.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE (n.nspname = 'public' OR n.nspname ~ '^tenant_[0-9a-f]{32}$') AND k.contype = 'f' AND NOT (a.attnum = ANY (k.conkey))
               AND NOT (c.relname = ANY ($1))",
            &[&REGISTRY_TABLES],
        )
        .await
        .expect("foreign keys");
    for key in &foreign_keys {
        let table: String = key.get("table_name");
        let name: String = key.get("conname");
        violations.push(format!("{table}: foreign key {name} does not include tenant_id"));
    }

    // Every index of those tables leads with tenant_id.
    let indexes = client
        .query(
            "SELECT CASE WHEN n.nspname = 'public' THEN c.relname::text ELSE n.nspname || '.' || c.relname END AS table_name, i.relname AS index_name
             FROM pg_index x
             JOIN pg_class c ON c.oid = x.indrelid
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE (n.nspname = 'public' OR n.nspname ~ '^tenant_[0-9a-f]{32}$') AND (x.indkey::int2[])[0] <> a.attnum AND NOT (c.relname = ANY ($1))",
            &[&REGISTRY_TABLES],
        )
        .await
        .expect("indexes");
    for index in &indexes {
        let table: String = index.get("table_name");
        let name: String = index.get("index_name");
        violations.push(format!("{table}: index {name} does not lead with tenant_id"));
    }

    // No SECURITY DEFINER function the app role can execute: it would run as its owner.
    let definers = client
        .query(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND has_function_privilege('tenantd_app', p.oid, 'EXECUTE')",
            &[],
        )
        .await
        .expect("security definer functions");
    for definer in &definers {
        let name: String = definer.get(0);
        violations.push(format!("function {name} is SECURITY DEFINER and executable by tenantd_app"));
    }

    // The app role: not superuser, not BYPASSRLS, owns nothing in this database.
    let role = client
        .query_one(
            "SELECT rolsuper, rolbypassrls,
                    (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
                  + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
                  + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
                  + (SELECT count(*) FROM pg_type WHERE typowner = r.oid) AS owned
             FROM pg_roles r WHERE rolname = 'tenantd_app'",
            &[],
        )
        .await
        .expect("app role");
    if role.get::<_, bool>("rolsuper") {
        violations.push("tenantd_app is a superuser".to_owned());
    }
    if role.get::<_, bool>("rolbypassrls") {
        violations.push("tenantd_app can bypass RLS".to_owned());
    }
    let owned: i64 = role.get("owned");
    if owned > 0 {
        violations.push(format!("tenantd_app owns {owned} objects"));
    }
    violations
}

#[tokio::test]
async fn every_tenant_table_passes_the_catalog_gate_and_the_gate_catches_a_table_without_rls() {
    let database = create_database().await;
    migrate(&database).await;
    let violations = gate_violations(&database).await;
    assert_eq!(violations, Vec::<String>::new());

    // Positive control for the gate itself: a tenant table created without RLS, with a
    // unique key that leaves tenant_id out, is caught.
    let admin = connect(&pg_admin(), &database).await;
    admin
        .batch_execute(
            "CREATE TABLE rogue (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid PRIMARY KEY, name text UNIQUE)",
        )
        .await
        .expect("create rogue table");
    let violations = gate_violations(&database).await;
    assert!(violations.contains(&"rogue: row-level security is not enabled".to_owned()), "{violations:?}");
    assert!(violations.contains(&"rogue: row-level security is not forced".to_owned()), "{violations:?}");
    assert!(violations.contains(&"rogue: needs a policy with both USING and WITH CHECK".to_owned()), "{violations:?}");
    assert!(violations.iter().any(|violation| violation.starts_with("rogue: key rogue_pkey")), "{violations:?}");
    assert!(violations.iter().any(|violation| violation.starts_with("rogue: key rogue_name_key")), "{violations:?}");
    assert!(violations.iter().any(|violation| violation.starts_with("rogue: index rogue_pkey")), "{violations:?}");

    // And a function that would run as its owner, reachable by the app role.
    admin
        .batch_execute(
            "CREATE FUNCTION peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM users';
             GRANT EXECUTE ON FUNCTION peek() TO tenantd_app;",
        )
        .await
        .expect("create security definer function");
    let violations = gate_violations(&database).await;
    assert!(
        violations.contains(&"function peek is SECURITY DEFINER and executable by tenantd_app".to_owned()),
        "{violations:?}"
    );
    drop_database(&database).await;
}

#[tokio::test]
async fn every_tenant_schema_passes_the_gate_and_the_gate_catches_an_open_policy_or_a_missing_table() {
    use crate::helpers::{IsolationTier, spawn_app, unique_slug};
    let app = spawn_app().await;
    let tenant = app.create_tenant_in(&unique_slug("gate"), IsolationTier::Schema).await.id;
    let schema = tenantd::db::tenant_schema::schema_name(uuid::Uuid::parse_str(&tenant).expect("id"));
    assert_eq!(gate_violations(&app.database).await, Vec::<String>::new(), "control: a provisioned schema passes");

    let admin = connect(&pg_admin(), &app.database).await;
    admin
        .batch_execute(&format!(
            "ALTER TABLE {schema}.documents NO FORCE ROW LEVEL SECURITY;
             CREATE POLICY open ON {schema}.users USING (true) WITH CHECK (true);
             ALTER POLICY tenant_isolation ON public.users
                 USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
                 WITH CHECK (tenant_id IS NOT NULL);
             DROP TABLE {schema}.tenant_settings;"
        ))
        .await
        .expect("weaken the schema");
    let violations = gate_violations(&app.database).await;
    for expected in [
        format!("{schema}.documents: row-level security is not forced"),
        format!("{schema}.users: a policy is not the fail-closed tenant policy"),
        "users: a policy is not the fail-closed tenant policy".to_owned(),
        format!("{schema}.tenant_settings: missing from its tenant schema"),
    ] {
        assert!(violations.contains(&expected), "{expected} in {violations:?}");
    }
    assert!(
        !violations.iter().any(|violation| violation.starts_with("documents:")),
        "control: the shared documents table still passes: {violations:?}"
    );
    app.stop().await;
}
