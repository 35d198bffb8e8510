//! Migrations go up, down and up again on an empty database.

use tenantd::db::migrations::{revert_all, run_pending};

use crate::helpers::{connect, create_database, database_url, drop_database, pg_admin};

const ALL_TABLES: [&str; 9] = [
    "api_keys",
    "audit_events",
    "documents",
    "idempotency_records",
    "platform_idempotency_records",
    "tenant_channel_bindings",
    "tenant_domains",
    "tenants",
    "users",
];

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
    assert_eq!(applied, 8);
    assert_eq!(tables(&database).await, ALL_TABLES);
    let reverted = revert_all(&url).await.expect("down");
    assert_eq!(reverted, applied);
    assert!(tables(&database).await.is_empty());
    let roles: i64 = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname IN ('tenantd_app', 'tenantd_owner')", &[])
        .await
        .expect("roles")
        .get(0);
    assert_eq!(roles, 2, "roles are cluster-wide and survive a down migration");
    assert_eq!(run_pending(&url).await.expect("up again"), applied);
    assert_eq!(tables(&database).await, ALL_TABLES);

    admin.execute("SELECT pg_advisory_unlock(7345001)", &[]).await.expect("unlock");
    drop_database(&database).await;
}
