//! The migration role need not be a superuser: a role with CREATEROLE that owns the database
//! (and may set `citus.propagate_set_commands`) migrates a fresh cluster, and tenantd then
//! serves; a role missing one of these fails with a message that names it. Each test has a
//! throwaway cluster of its own, since roles are cluster-wide.

use tenantd::config::SecretString;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{start, test_config, unique_slug};
use crate::throwaway::ThrowawayPostgres;

/// Exactly what README's "Migration role" section tells an operator to run as a superuser.
const MIGRATOR_SETUP: &str = "CREATE ROLE tenantd_migrator LOGIN CREATEROLE CREATEDB; \
     GRANT SET ON PARAMETER citus.propagate_set_commands TO tenantd_migrator;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_createrole_role_that_owns_its_database_migrates_it_and_tenantd_then_serves() {
    let postgres = ThrowawayPostgres::start();
    let admin = postgres.connect("postgres", "postgres").await;
    admin.batch_execute(MIGRATOR_SETUP).await.expect("create the migration role");
    let migrator = postgres.connect("tenantd_migrator", "postgres").await;
    migrator.batch_execute("CREATE DATABASE tenantd").await.expect("the migrator creates its database");
    let superuser: bool = migrator
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .expect("rolsuper")
        .get(0);
    assert!(!superuser, "control: the migrator is not a superuser");

    let applied = tenantd::db::migrations::run_pending(&postgres.url("tenantd_migrator", "tenantd"))
        .await
        .expect("a CREATEROLE database owner migrates");
    assert!(applied >= 10, "{applied} migrations");
    let tenantd_db = postgres.connect("postgres", "tenantd").await;
    let owners: Vec<String> = tenantd_db
        .query("SELECT DISTINCT tableowner::text FROM pg_tables WHERE tablename IN ('tenants', 'users', 'tenant_settings')", &[])
        .await
        .expect("owners")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(owners, ["tenantd_owner"], "the tables belong to tenantd_owner, as with a superuser migrator");
    let app_role: (bool, bool, bool) = {
        let row = tenantd_db
            .query_one("SELECT rolsuper, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = 'tenantd_app'", &[])
            .await
            .expect("tenantd_app");
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(app_role, (false, false, false), "tenantd_app: NOSUPERUSER NOBYPASSRLS NOINHERIT");

    let mut config = test_config("unused");
    config.database.url = SecretString::from(postgres.url("tenantd_app", "tenantd"));
    let app = start("unused".into(), config).await;
    app.wait_for_status("", ServingStatus::Serving).await;
    let tenant = app.create_tenant(&unique_slug("mig")).await.id;
    app.create_user(&tenant, "ada@migrator.example").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_role_without_what_it_needs_fails_with_a_message_that_names_it() {
    let postgres = ThrowawayPostgres::start();
    let admin = postgres.connect("postgres", "postgres").await;
    admin
        .batch_execute(
            "CREATE ROLE no_createrole LOGIN CREATEDB; \
             CREATE ROLE not_owner LOGIN CREATEROLE; \
             GRANT SET ON PARAMETER citus.propagate_set_commands TO no_createrole, not_owner; \
             CREATE ROLE no_parameter LOGIN CREATEROLE CREATEDB;",
        )
        .await
        .expect("roles");
    for database in
        ["owned_by_no_createrole OWNER no_createrole", "owned_by_postgres", "owned_by_no_parameter OWNER no_parameter"]
    {
        admin.batch_execute(&format!("CREATE DATABASE {database}")).await.expect("database");
    }
    for (role, database, expected) in [
        ("no_createrole", "owned_by_no_createrole", "lacks: CREATEROLE (ALTER ROLE no_createrole CREATEROLE)"),
        ("not_owner", "owned_by_postgres", "lacks: ownership of the database owned_by_postgres"),
        (
            "no_parameter",
            "owned_by_no_parameter",
            "lacks: GRANT SET ON PARAMETER citus.propagate_set_commands TO no_parameter",
        ),
    ] {
        let error = tenantd::db::migrations::run_pending(&postgres.url(role, database))
            .await
            .expect_err("the migration is refused");
        let message = format!("{error:#}");
        assert!(message.contains(expected), "{role}: {message}");
        let roles: i64 = admin
            .query_one("SELECT count(*) FROM pg_roles WHERE rolname IN ('tenantd_owner', 'tenantd_app')", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(roles, 0, "{role}: refused before it created anything");
    }
    // Control: the same cluster migrates as its superuser.
    tenantd::db::migrations::run_pending(&postgres.url("postgres", "owned_by_postgres")).await.expect("superuser");
}
