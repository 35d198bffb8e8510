//! Isolation at the SQL level, as the app role the server connects as: PostgreSQL itself
//! refuses cross-tenant access, whatever the application does.

use crate::helpers::{connect, spawn_app, unique_slug};

/// A migrated database with two tenants and one user each, plus app-role access.
struct Fixture {
    app: crate::helpers::TestApp,
    tenant_a: String,
    tenant_b: String,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    app.create_user(&tenant_a, "a@a.example").await;
    app.create_user(&tenant_b, "b@b.example").await;
    Fixture { app, tenant_a, tenant_b }
}

/// PostgreSQL's own message of a failed statement.
fn db_message(error: &tokio_postgres::Error) -> String {
    error.as_db_error().map(|db| db.message().to_owned()).unwrap_or_else(|| error.to_string())
}

async fn tenant_ids_visible(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query("SELECT tenant_id::text FROM users ORDER BY tenant_id", &[])
        .await
        .expect("select as app role")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn with_no_tenant_set_the_app_role_sees_no_rows_on_a_fresh_or_reused_connection() {
    let fixture = fixture().await;
    let admin = connect(&crate::helpers::pg_admin(), &fixture.app.database).await;
    let total: i64 = admin.query_one("SELECT count(*) FROM users", &[]).await.expect("count").get(0);
    assert_eq!(total, 2, "control: the rows exist");

    let app_role = connect("tenantd_app", &fixture.app.database).await;
    assert!(tenant_ids_visible(&app_role).await.is_empty(), "fresh connection, no tenant: no rows");

    // Reuse the connection: set tenant A in a transaction, commit, then look again.
    app_role.batch_execute("BEGIN").await.expect("begin");
    crate::helpers::set_tenant(&app_role, &fixture.tenant_a).await;
    assert_eq!(tenant_ids_visible(&app_role).await, vec![fixture.tenant_a.clone()], "control: A is visible inside");
    app_role.batch_execute("COMMIT").await.expect("commit");
    let setting: String =
        app_role.query_one("SELECT current_setting('app.tenant_id', true)", &[]).await.expect("setting").get(0);
    assert_eq!(setting, "", "a transaction-local setting reverts to '' (not NULL) on a reused connection");
    assert!(tenant_ids_visible(&app_role).await.is_empty(), "reused connection, no tenant: no rows");
    fixture.app.stop().await;
}

#[tokio::test]
async fn with_tenant_a_set_only_a_rows_are_visible_and_none_can_move_to_b() {
    let fixture = fixture().await;
    let client = connect("tenantd_app", &fixture.app.database).await;
    client.batch_execute("BEGIN").await.expect("begin");
    crate::helpers::set_tenant(&client, &fixture.tenant_a).await;
    assert_eq!(tenant_ids_visible(&client).await, vec![fixture.tenant_a.clone()]);

    // Insert into B while A is set: refused by WITH CHECK.
    client.batch_execute("SAVEPOINT before_insert").await.expect("savepoint");
    let insert = client
        .execute(
            "INSERT INTO users (tenant_id, id, email, role) VALUES ($1::text::uuid, gen_random_uuid(), 'x@b.example', 'member')",
            &[&fixture.tenant_b],
        )
        .await;
    let error = insert.expect_err("insert into another tenant is refused");
    assert!(db_message(&error).contains("row-level security"), "{error:?}");
    client.batch_execute("ROLLBACK TO SAVEPOINT before_insert").await.expect("rollback to savepoint");

    // Positive control: inserting into A works.
    client
        .execute(
            "INSERT INTO users (tenant_id, id, email, role) VALUES ($1::text::uuid, gen_random_uuid(), 'x@a.example', 'member')",
            &[&fixture.tenant_a],
        )
        .await
        .expect("insert into own tenant");

    // Update moving A's row to B: refused.
    client.batch_execute("SAVEPOINT before_update").await.expect("savepoint");
    let moved = client.execute("UPDATE users SET tenant_id = $1::text::uuid", &[&fixture.tenant_b]).await;
    let error = moved.expect_err("moving a row to another tenant is refused");
    assert!(db_message(&error).contains("row-level security"), "{error:?}");
    client.batch_execute("ROLLBACK TO SAVEPOINT before_update").await.expect("rollback to savepoint");

    // Updating B's rows touches nothing.
    let touched = client
        .execute("UPDATE users SET display_name = 'pwned' WHERE tenant_id = $1::text::uuid", &[&fixture.tenant_b])
        .await
        .expect("update runs");
    assert_eq!(touched, 0);
    client.batch_execute("ROLLBACK").await.expect("rollback");
    fixture.app.stop().await;
}

#[tokio::test]
async fn turning_row_security_off_is_refused_for_the_app_role() {
    let fixture = fixture().await;
    let client = connect("tenantd_app", &fixture.app.database).await;
    client.batch_execute("BEGIN").await.expect("begin");
    crate::helpers::set_tenant(&client, &fixture.tenant_a).await;
    assert_eq!(tenant_ids_visible(&client).await.len(), 1, "control: RLS applies and A's row is visible");
    client.batch_execute("ROLLBACK").await.expect("rollback");

    // With row_security off, a role that cannot bypass RLS gets an error instead of rows.
    client.batch_execute("SET row_security = off").await.expect("the GUC itself may be set");
    let error = client.query("SELECT * FROM users", &[]).await.expect_err("the query is refused");
    assert!(db_message(&error).contains("row-level security"), "{error:?}");
    fixture.app.stop().await;
}
