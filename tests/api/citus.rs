//! Citus readiness, checked on plain PostgreSQL: what the Citus migration does without the
//! extension, that every table is recorded for distribution, that every unique and foreign
//! key constraint answers a deliberate error even in the shape Citus reports it, and that
//! readiness does not depend on the Citus setting where there is no Citus. What only a
//! cluster can show is in docs/citus.md.

use diesel::result::DatabaseErrorKind;
use tenantd::domain;
use tenantd::domain::resource::Resource;
use tenantd::error::{Error, from_database, reported_database_error};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{connect, create_database, drop_database, migrate, pg_admin, start, test_config};

/// Cluster-wide lock the test harness takes around migrations (helpers::migrate). Role
/// settings are cluster-wide too, and tests/api/migrations.rs resets this one while it
/// migrates down, so checks of the setting hold the same lock.
const MIGRATION_LOCK: i64 = 7345001;

/// The version diesel records for the Citus migration.
const CITUS_MIGRATION: &str = "20261201000009";

/// The app role's value of `citus.propagate_set_commands`, as a new app-role session sees it.
async fn effective_setting(database: &str) -> Option<String> {
    connect("tenantd_app", database)
        .await
        .query_one("SELECT current_setting('citus.propagate_set_commands', true)", &[])
        .await
        .expect("effective setting")
        .get(0)
}

/// The app role's own settings (`pg_roles.rolconfig`), as `name=value` strings.
async fn role_settings(admin: &tokio_postgres::Client) -> Vec<String> {
    admin
        .query_one("SELECT coalesce(rolconfig, '{}') FROM pg_roles WHERE rolname = 'tenantd_app'", &[])
        .await
        .expect("role settings")
        .get(0)
}

#[tokio::test]
async fn after_migration_the_app_role_propagates_set_local_even_on_plain_postgresql() {
    let database = create_database().await;
    migrate(&database).await;
    let admin = connect(&pg_admin(), "postgres").await;
    admin.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.expect("lock");

    let settings = role_settings(&admin).await;
    assert!(settings.contains(&"citus.propagate_set_commands=local".to_owned()), "{settings:?}");
    // Control: the role's other settings are there too, so the list was read.
    assert!(settings.contains(&"statement_timeout=5s".to_owned()), "{settings:?}");
    assert_eq!(effective_setting(&database).await.as_deref(), Some("local"));

    admin.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.expect("unlock");
    drop_database(&database).await;
}

#[tokio::test]
async fn without_citus_the_citus_migration_runs_and_distributes_nothing() {
    let database = create_database().await;
    migrate(&database).await;
    let admin = connect(&pg_admin(), &database).await;

    let citus: bool = admin
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')", &[])
        .await
        .expect("extensions")
        .get(0);
    assert!(!citus, "this test is about plain PostgreSQL");
    let applied: bool = admin
        .query_one("SELECT EXISTS (SELECT 1 FROM __diesel_schema_migrations WHERE version = $1)", &[&CITUS_MIGRATION])
        .await
        .expect("applied migrations")
        .get(0);
    assert!(applied, "the Citus migration ran");

    // The steps only a cluster needs did not happen: the owner foreign key is the original,
    // and the table owner can neither log in nor create in the schema.
    let owner_key: String = admin
        .query_one("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'documents_owner_fkey'", &[])
        .await
        .expect("documents_owner_fkey")
        .get(0);
    assert_eq!(owner_key, "FOREIGN KEY (tenant_id, owner_user_id) REFERENCES users(tenant_id, id)");
    let owner_creates: bool = admin
        .query_one("SELECT has_schema_privilege('tenantd_owner', 'public', 'CREATE')", &[])
        .await
        .expect("schema privilege")
        .get(0);
    assert!(!owner_creates);
    let owner_logs_in: bool = admin
        .query_one("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'tenantd_owner'", &[])
        .await
        .expect("owner role")
        .get(0);
    assert!(!owner_logs_in);

    // What migrations call or write on every run belongs to the migration role, not to the
    // table owner (decision 0008).
    let owned_by_owner: i64 = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relname = 'tenantd_table_distribution'
                         AND relowner = 'tenantd_owner'::regrole)
                  + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'tenantd_distribute_%'
                         AND proowner = 'tenantd_owner'::regrole)",
            &[],
        )
        .await
        .expect("owners")
        .get(0);
    assert_eq!(owned_by_owner, 0);
    // Control: the tenant tables do belong to the owner, so the query can see ownership.
    let users_owner: String = admin
        .query_one("SELECT relowner::regrole::text FROM pg_class WHERE relname = 'users'", &[])
        .await
        .expect("users owner")
        .get(0);
    assert_eq!(users_owner, "tenantd_owner");

    // The distribution functions are for migrations: the app role cannot call them.
    let app_executes: bool = admin
        .query_one(
            "SELECT has_function_privilege('tenantd_app', 'tenantd_distribute_tenant_table(regclass)', 'EXECUTE')
                 OR has_function_privilege('tenantd_app', 'tenantd_distribute_registry_table(regclass)', 'EXECUTE')",
            &[],
        )
        .await
        .expect("function privileges")
        .get(0);
    assert!(!app_executes);
    drop_database(&database).await;
}

/// Tables without row-level security that are still distributed by tenant: indexes written
/// with every tenant's writes (a reference table would make each write touch every node),
/// read across tenants, holding no tenant data (decision 0015 for `event_transactions`).
const DISTRIBUTED_INDEXES: &[&str] = &["event_transactions"];

/// Every table of the schema that is not recorded, or recorded with the wrong distribution:
/// a table with row-level security, or one of [`DISTRIBUTED_INDEXES`], is a tenant table
/// (distributed by tenant_id, colocated with users), any other is a registry table (a
/// reference table). Empty means that, on Citus, the migrations distribute every table.
async fn distribution_violations(database: &str) -> Vec<String> {
    let rows = connect(&pg_admin(), database)
        .await
        .query(
            "SELECT c.relname::text,
                    CASE WHEN c.relrowsecurity OR c.relname = ANY ($1) THEN 'tenant' ELSE 'reference' END AS expected,
                    d.distribution,
                    EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                            AND NOT a.attisdropped) AS has_tenant_id
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN tenantd_table_distribution d ON d.table_name = c.oid
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
               AND c.relname NOT IN ('__diesel_schema_migrations', 'tenantd_table_distribution')
             ORDER BY 1",
            &[&DISTRIBUTED_INDEXES],
        )
        .await
        .expect("tables and their distribution");
    let mut violations = Vec::new();
    for row in &rows {
        let table: String = row.get(0);
        let expected: String = row.get(1);
        let recorded: Option<String> = row.get(2);
        let has_tenant_id: bool = row.get(3);
        match recorded {
            None => violations.push(format!(
                "{table}: not distributed; its migration must call tenantd_distribute_{}_table('{table}')",
                if expected == "tenant" { "tenant" } else { "registry" }
            )),
            Some(recorded) if recorded != expected => {
                violations.push(format!("{table}: recorded as a {recorded} table but is a {expected} table"));
            }
            Some(_) => {}
        }
        if expected == "tenant" && !has_tenant_id {
            violations.push(format!("{table}: a tenant table without tenant_id cannot be distributed"));
        }
    }
    violations
}

#[tokio::test]
async fn every_table_is_recorded_for_distribution_and_a_table_left_out_is_caught() {
    let database = create_database().await;
    migrate(&database).await;
    assert_eq!(distribution_violations(&database).await, Vec::<String>::new());

    let admin = connect(&pg_admin(), &database).await;
    let recorded: Vec<(String, String)> = admin
        .query("SELECT table_name::text, distribution FROM tenantd_table_distribution ORDER BY 1", &[])
        .await
        .expect("recorded distribution")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected = [
        ("api_keys", "tenant"),
        ("audit_events", "tenant"),
        ("documents", "tenant"),
        ("event_index_start", "reference"),
        ("event_transactions", "tenant"),
        ("idempotency_records", "tenant"),
        ("operations", "reference"),
        ("operators", "reference"),
        ("plans", "reference"),
        ("platform_idempotency_records", "reference"),
        ("tenant_channel_bindings", "reference"),
        ("tenant_domains", "reference"),
        ("tenant_quota_usage", "tenant"),
        ("tenant_settings", "tenant"),
        ("tenants", "reference"),
        ("users", "tenant"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(table, distribution)| ((*table).to_owned(), (*distribution).to_owned())).collect();
    assert_eq!(recorded, expected);

    // Positive control: a later migration that forgets the call is caught, and so is one
    // that records a tenant table as a registry table.
    admin
        .batch_execute(
            "CREATE TABLE invoices (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid NOT NULL,
                                    PRIMARY KEY (tenant_id, id));
             ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;
             ALTER TABLE invoices FORCE ROW LEVEL SECURITY;
             CREATE TABLE receipts (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid NOT NULL,
                                    PRIMARY KEY (tenant_id, id));
             ALTER TABLE receipts ENABLE ROW LEVEL SECURITY;
             SELECT tenantd_distribute_registry_table('receipts');",
        )
        .await
        .expect("create tables");
    assert_eq!(
        distribution_violations(&database).await,
        [
            "invoices: not distributed; its migration must call tenantd_distribute_tenant_table('invoices')",
            "receipts: recorded as a reference table but is a tenant table",
        ]
    );
    // Calling the function, as a migration would, is what the gate asks for.
    admin.batch_execute("SELECT tenantd_distribute_tenant_table('invoices')").await.expect("distribute invoices");
    assert_eq!(
        distribution_violations(&database).await,
        ["receipts: recorded as a reference table but is a tenant table"]
    );
    drop_database(&database).await;
}

/// A domain module's answer to a violated constraint (`None`: INTERNAL).
type ConstraintMapper = fn(&str) -> Option<Error>;

/// Which domain module writes each table, and so answers for its constraints. A table
/// missing here fails the constraint check below until its module is named.
const CONSTRAINT_MAPPERS: &[(&str, ConstraintMapper)] = &[
    ("tenants", domain::tenants::constraint_error),
    ("tenant_domains", domain::tenants::constraint_error),
    ("tenant_channel_bindings", domain::tenants::constraint_error),
    ("users", domain::users::constraint_error),
    ("documents", domain::documents::constraint_error),
    ("api_keys", domain::api_keys::constraint_error),
    ("audit_events", domain::audit::constraint_error),
    ("event_transactions", domain::audit::constraint_error),
    ("idempotency_records", domain::idempotency::constraint_error),
    ("platform_idempotency_records", domain::idempotency::constraint_error),
    ("operators", domain::operators::constraint_error),
    ("plans", domain::plans::constraint_error),
    ("tenant_quota_usage", domain::quotas::constraint_error),
    ("operations", domain::operations::constraint_error),
    ("tenant_settings", <domain::settings::Setting as Resource>::constraint_error),
];

/// How a violation of `constraint` reaches tenantd, from PostgreSQL (constraint name set)
/// and from Citus (none; the message names the shard's constraint).
fn as_reported(kind: &str, table: &str, constraint: &str) -> [(diesel::result::Error, &'static str); 2] {
    let (error_kind, postgres, citus) = match kind {
        "unique" => (
            DatabaseErrorKind::UniqueViolation,
            format!("duplicate key value violates unique constraint \"{constraint}\""),
            format!("duplicate key value violates unique constraint \"{constraint}_102030\""),
        ),
        "foreign key" => (
            DatabaseErrorKind::ForeignKeyViolation,
            format!("insert or update on table \"{table}\" violates foreign key constraint \"{constraint}\""),
            format!(
                "insert or update on table \"{table}_102040\" violates foreign key constraint \"{constraint}_102040\""
            ),
        ),
        _ => (
            DatabaseErrorKind::ForeignKeyViolation,
            format!("update or delete on table \"{table}\" violates foreign key constraint \"{constraint}\""),
            format!(
                "update or delete on table \"{table}_102008\" violates foreign key constraint \"{constraint}_102040\""
            ),
        ),
    };
    [
        (reported_database_error(error_kind, postgres, Some(constraint)), "PostgreSQL"),
        (reported_database_error(error_kind, citus, None), "Citus"),
    ]
}

/// Every unique and foreign key constraint the app role can violate that would answer
/// INTERNAL, as readable sentences; and every constraint whose name a shard suffix could be
/// confused with. Empty means no duplicate and no dangling reference is ever INTERNAL.
async fn constraint_violations(database: &str) -> Vec<String> {
    let client = connect(&pg_admin(), database).await;
    // Unique indexes (primary keys, unique constraints and plain unique indexes) and foreign
    // keys of tables the app role writes; and foreign keys into tables it deletes from.
    let constraints = client
        .query(
            "SELECT c.relname::text, i.relname::text, 'unique'
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class c ON c.oid = x.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND x.indisunique
               AND (has_table_privilege('tenantd_app', c.oid, 'INSERT')
                    OR has_table_privilege('tenantd_app', c.oid, 'UPDATE'))
             UNION ALL
             SELECT c.relname::text, k.conname::text, 'foreign key'
             FROM pg_constraint k
             JOIN pg_class c ON c.oid = k.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND k.contype = 'f'
               AND (has_table_privilege('tenantd_app', c.oid, 'INSERT')
                    OR has_table_privilege('tenantd_app', c.oid, 'UPDATE'))
             UNION ALL
             SELECT r.relname::text, k.conname::text, 'delete'
             FROM pg_constraint k
             JOIN pg_class r ON r.oid = k.confrelid
             JOIN pg_namespace n ON n.oid = r.relnamespace
             WHERE n.nspname = 'public' AND k.contype = 'f'
               AND has_table_privilege('tenantd_app', r.oid, 'DELETE')
             ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .expect("constraints");
    assert!(!constraints.is_empty(), "control: the schema has constraints");

    let mut violations = Vec::new();
    for row in &constraints {
        let table: String = row.get(0);
        let constraint: String = row.get(1);
        let kind: String = row.get(2);
        let Some((_, mapper)) = CONSTRAINT_MAPPERS.iter().find(|(name, _)| *name == table) else {
            violations
                .push(format!("{table}: no domain module answers for {constraint}; add it to CONSTRAINT_MAPPERS"));
            continue;
        };
        for (error, shape) in as_reported(&kind, &table, &constraint) {
            let mapped = from_database(error, mapper);
            if mapped.code() == Code::Internal {
                violations.push(format!("{table}: {kind} {constraint} as {shape} reports it answers INTERNAL"));
            }
        }
    }

    // Citus names a shard's constraint `<constraint>_<shard id>`: a constraint of ours ending
    // in `_<digits>` could be taken for another one's shard.
    let suffixed = client
        .query(
            "SELECT conname::text FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
             WHERE n.nspname = 'public' AND conname ~ '_[0-9]+$'
             UNION
             SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_namespace n ON n.oid = i.relnamespace
             WHERE n.nspname = 'public' AND i.relname ~ '_[0-9]+$'
             ORDER BY 1",
            &[],
        )
        .await
        .expect("suffixed constraints");
    for row in &suffixed {
        let name: String = row.get(0);
        violations.push(format!("{name}: ends in _<digits>, like a Citus shard's constraint"));
    }
    violations
}

#[tokio::test]
async fn every_unique_and_foreign_key_constraint_answers_a_deliberate_error_even_as_citus_reports_it() {
    let database = create_database().await;
    migrate(&database).await;
    assert_eq!(constraint_violations(&database).await, Vec::<String>::new());

    // Positive control: a new unique index nobody maps is caught, and so is a table no
    // domain module answers for, and a name that looks like a shard's.
    let admin = connect(&pg_admin(), &database).await;
    admin
        .batch_execute(
            "CREATE UNIQUE INDEX users_tenant_id_display_name_key ON users (tenant_id, display_name);
             CREATE TABLE rogue (id uuid CONSTRAINT rogue_key_2 PRIMARY KEY);
             GRANT INSERT ON rogue TO tenantd_app;",
        )
        .await
        .expect("create unmapped constraints");
    let violations = constraint_violations(&database).await;
    assert_eq!(
        violations,
        [
            "rogue: no domain module answers for rogue_key_2; add it to CONSTRAINT_MAPPERS",
            "users: unique users_tenant_id_display_name_key as PostgreSQL reports it answers INTERNAL",
            "users: unique users_tenant_id_display_name_key as Citus reports it answers INTERNAL",
            "rogue_key_2: ends in _<digits>, like a Citus shard's constraint",
        ]
    );
    drop_database(&database).await;
}

#[tokio::test]
async fn on_plain_postgresql_readiness_does_not_depend_on_the_citus_setting() {
    let database = create_database().await;
    migrate(&database).await;
    let admin = connect(&pg_admin(), "postgres").await;
    admin.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.expect("lock");
    admin.batch_execute("ALTER ROLE tenantd_app RESET citus.propagate_set_commands").await.expect("reset setting");
    // Control: a new app-role session really has no value.
    assert_eq!(effective_setting(&database).await, None);

    let app = start(database.clone(), test_config(&database)).await;
    app.wait_for_status("", ServingStatus::Serving).await;
    assert_eq!(app.status("tenantd.v1.UserService").await, ServingStatus::Serving);

    admin
        .batch_execute("ALTER ROLE tenantd_app SET citus.propagate_set_commands = 'local'")
        .await
        .expect("restore setting");
    admin.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.expect("unlock");
    app.stop().await;
}
