//! Migrations go up, down and up again on an empty database.

use tenantd::db::migrations::{revert_all, run_pending};

use crate::helpers::{connect, create_database, database_url, drop_database, pg_admin};

const ALL_TABLES: [&str; 17] = [
    "api_keys",
    "audit_events",
    "documents",
    "event_index_start",
    "event_transactions",
    "idempotency_records",
    "operations",
    "operators",
    "plans",
    "platform_idempotency_records",
    "tenant_channel_bindings",
    "tenant_domains",
    "tenant_quota_usage",
    "tenant_settings",
    "tenantd_table_distribution",
    "tenants",
    "users",
];

/// Whether the app role has the setting the Citus migration gives it.
async fn app_role_propagates_set_commands(admin: &tokio_postgres::Client) -> bool {
    admin
        .query_one(
            "SELECT coalesce('citus.propagate_set_commands=local' = ANY (rolconfig), false)
             FROM pg_roles WHERE rolname = 'tenantd_app'",
            &[],
        )
        .await
        .expect("role settings")
        .get(0)
}

async fn tables(database: &str) -> Vec<String> {
    connect(&pg_admin(), database)
        .await
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename <> '__diesel_schema_migrations' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let database = create_database().await;
    let url = database_url(&pg_admin(), &database);
    let admin = connect(&pg_admin(), "postgres").await;
    admin.execute("SELECT pg_advisory_lock(7345001)", &[]).await.expect("lock");

    let applied = run_pending(&url).await.expect("up");
    assert_eq!(applied, 17);
    assert_eq!(tables(&database).await, ALL_TABLES);
    assert!(app_role_propagates_set_commands(&admin).await);
    let reverted = revert_all(&url).await.expect("down");
    assert_eq!(reverted, applied);
    assert!(tables(&database).await.is_empty());
    assert!(!app_role_propagates_set_commands(&admin).await, "the down migration resets the role setting");
    let roles: i64 = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname IN ('tenantd_app', 'tenantd_owner')", &[])
        .await
        .expect("roles")
        .get(0);
    assert_eq!(roles, 2, "roles are cluster-wide and survive a down migration");
    assert_eq!(run_pending(&url).await.expect("up again"), applied);
    assert_eq!(tables(&database).await, ALL_TABLES);
    assert!(app_role_propagates_set_commands(&admin).await);

    admin.execute("SELECT pg_advisory_unlock(7345001)", &[]).await.expect("unlock");
    drop_database(&database).await;
}
