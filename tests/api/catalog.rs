//! The catalog gate: structural rules every tenant table must follow, checked against
//! PostgreSQL's catalog, so that a new table cannot silently skip RLS.

use crate::helpers::{connect, create_database, drop_database, migrate, pg_admin};

/// Every rule violation in `database`, as readable sentences. Empty means the gate passes.
pub async fn gate_violations(database: &str) -> Vec<String> {
    let client = connect(&pg_admin(), database).await;
    let mut violations = Vec::new();

    // Tables with a tenant_id column: RLS enabled and forced, a policy with USING and WITH CHECK.
    let tables = client
        .query(
            "SELECT c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity,
                    EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid
                            AND p.polqual IS NOT NULL AND p.polwithcheck IS NOT NULL) AS has_policy,
                    NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid
                            AND (p.polqual IS NULL OR p.polwithcheck IS NULL)) AS all_policies_complete
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
            &[],
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
    }

    // Every primary key and unique index of those tables includes tenant_id.
    let keys = client
        .query(
            "SELECT c.relname AS table_name, i.relname AS index_name
             FROM pg_index x
             JOIN pg_class c ON c.oid = x.indrelid
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE n.nspname = 'public' AND (x.indisunique OR x.indisprimary)
               AND NOT (a.attnum = ANY (x.indkey::int2[]))",
            &[],
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
            "SELECT c.relname AS table_name, k.conname
             FROM pg_constraint k
             JOIN pg_class c ON c.oid = k.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE n.nspname = 'public' AND k.contype = 'f' AND NOT (a.attnum = ANY (k.conkey))",
            &[],
        )
        .await
        .expect("foreign keys");
    for key in &foreign_keys {
        let table: String = key.get("table_name");
        let name: String = key.get("conname");
        violations.push(format!("{table}: foreign key {name} does not include tenant_id"));
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
    drop_database(&database).await;
}
