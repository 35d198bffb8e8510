//! Attacks at the SQL level, as the app role the server connects as, each beside a
//! positive control. PostgreSQL, not tenantd, must refuse them.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::helpers::{TestApp, connect, pg_admin, spawn_app, unique_slug};

struct Fixture {
    app: TestApp,
    client: Client,
    tenant_a: String,
    tenant_b: String,
    bob_id: String,
}

/// Two tenants with one user each, and an app-role connection.
async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    app.create_user(&tenant_a, "alice@a.example").await;
    let bob_id = app.create_user(&tenant_b, "bob@b.example").await.id;
    let client = connect("tenantd_app", &app.database).await;
    Fixture { app, client, tenant_a, tenant_b, bob_id }
}

impl Fixture {
    /// Opens a transaction acting as `tenant`.
    async fn begin_as(&self, tenant: &str) {
        self.client.batch_execute("BEGIN").await.expect("begin");
        crate::helpers::set_tenant(&self.client, tenant).await;
    }

    async fn rollback(&self) {
        self.client.batch_execute("ROLLBACK").await.expect("rollback");
    }
}

fn sqlstate(error: &tokio_postgres::Error) -> Option<SqlState> {
    error.code().cloned()
}

#[tokio::test]
async fn an_upsert_cannot_reach_another_tenants_row() {
    let fixture = fixture().await;
    fixture.begin_as(&fixture.tenant_a).await;
    // Positive control: an upsert of A's own row works.
    let own = fixture
        .client
        .execute(
            "INSERT INTO users (tenant_id, id, email, role) VALUES ($1::text::uuid, gen_random_uuid(), 'new@a.example', 'member')
             ON CONFLICT (tenant_id, lower(email)) DO UPDATE SET display_name = 'upserted'",
            &[&fixture.tenant_a],
        )
        .await
        .expect("own upsert");
    assert_eq!(own, 1);
    // The attack: insert B's key and hope ON CONFLICT updates B's row.
    let attack = fixture
        .client
        .execute(
            "INSERT INTO users (tenant_id, id, email, role) VALUES ($1::text::uuid, $2::text::uuid, 'x@b.example', 'member')
             ON CONFLICT (tenant_id, id) DO UPDATE SET display_name = 'pwned'",
            &[&fixture.tenant_b, &fixture.bob_id],
        )
        .await
        .expect_err("refused");
    assert!(attack.as_db_error().is_some_and(|db| db.message().contains("row-level security")), "{attack:?}");
    fixture.rollback().await;
    let admin = connect(&pg_admin(), &fixture.app.database).await;
    let name: String = admin
        .query_one("SELECT display_name FROM users WHERE id = $1::text::uuid", &[&fixture.bob_id])
        .await
        .expect("bob")
        .get(0);
    assert_ne!(name, "pwned");
    fixture.app.stop().await;
}

#[tokio::test]
async fn colliding_with_another_tenants_values_reveals_nothing() {
    let fixture = fixture().await;
    fixture.begin_as(&fixture.tenant_a).await;
    // Positive control: a collision inside A's own data is a unique violation.
    fixture.client.batch_execute("SAVEPOINT own").await.expect("savepoint");
    let own = fixture
        .client
        .execute(
            "INSERT INTO users (tenant_id, id, email, role) VALUES ($1::text::uuid, gen_random_uuid(), 'ALICE@a.example', 'member')",
            &[&fixture.tenant_a],
        )
        .await
        .expect_err("own duplicate");
    assert_eq!(sqlstate(&own), Some(SqlState::UNIQUE_VIOLATION));
    fixture.client.batch_execute("ROLLBACK TO SAVEPOINT own").await.expect("rollback to savepoint");
    // B's email and B's user id, used inside A: no error, so nothing about B is revealed.
    let inserted = fixture
        .client
        .execute(
            "INSERT INTO users (tenant_id, id, email, role) VALUES ($1::text::uuid, $2::text::uuid, 'bob@b.example', 'member')",
            &[&fixture.tenant_a, &fixture.bob_id],
        )
        .await
        .expect("keys are per tenant");
    assert_eq!(inserted, 1);
    fixture.rollback().await;
    fixture.app.stop().await;
}

#[tokio::test]
async fn truncate_is_refused_and_copy_sees_only_the_tenants_rows() {
    let fixture = fixture().await;
    fixture.begin_as(&fixture.tenant_a).await;
    let deleted =
        fixture.client.execute("DELETE FROM users WHERE false", &[]).await.expect("control: DELETE is granted");
    assert_eq!(deleted, 0);
    let truncate = fixture.client.execute("TRUNCATE users", &[]).await.expect_err("TRUNCATE refused");
    assert_eq!(sqlstate(&truncate), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    fixture.rollback().await;

    fixture.begin_as(&fixture.tenant_a).await;
    let copied = copy_out(&fixture.client, "COPY users (tenant_id, email) TO STDOUT").await;
    assert_eq!(copied.lines().count(), 1, "control: A's own row is copied");
    assert!(copied.contains(&fixture.tenant_a) && !copied.contains(&fixture.tenant_b), "{copied}");
    fixture.rollback().await;
    let without_tenant = copy_out(&fixture.client, "COPY users (tenant_id, email) TO STDOUT").await;
    assert!(without_tenant.is_empty(), "no tenant set, nothing copied");
    fixture.app.stop().await;
}

async fn copy_out(client: &Client, statement: &str) -> String {
    use futures_util::TryStreamExt;
    let stream = Box::pin(client.copy_out(statement).await.expect("copy out"));
    let chunks: Vec<_> = stream.try_collect().await.expect("copy data");
    chunks.iter().map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect()
}

#[tokio::test]
async fn a_prepared_statement_reused_across_tenants_follows_the_current_tenant() {
    let fixture = fixture().await;
    let statement = fixture.client.prepare("SELECT tenant_id::text FROM users").await.expect("prepare");
    // Enough executions for PostgreSQL to switch to a generic plan.
    for round in 0..8 {
        let tenant = if round % 2 == 0 { &fixture.tenant_a } else { &fixture.tenant_b };
        fixture.begin_as(tenant).await;
        let rows: Vec<String> =
            fixture.client.query(&statement, &[]).await.expect("execute").iter().map(|row| row.get(0)).collect();
        assert_eq!(rows, vec![tenant.clone()], "round {round}");
        fixture.rollback().await;
    }
    let rows = fixture.client.query(&statement, &[]).await.expect("execute without tenant");
    assert!(rows.is_empty());
    fixture.app.stop().await;
}

#[tokio::test]
async fn views_and_functions_cannot_be_used_to_run_as_the_owner() {
    let fixture = fixture().await;
    fixture.begin_as(&fixture.tenant_a).await;
    let view = fixture.client.execute("CREATE VIEW everyone AS SELECT * FROM users", &[]).await.expect_err("no CREATE");
    assert_eq!(sqlstate(&view), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    fixture.rollback().await;
    fixture.begin_as(&fixture.tenant_a).await;
    let function = fixture
        .client
        .execute(
            "CREATE FUNCTION everyone() RETURNS SETOF users LANGUAGE sql SECURITY DEFINER AS 'SELECT * FROM users'",
            &[],
        )
        .await
        .expect_err("no CREATE");
    assert_eq!(sqlstate(&function), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    fixture.rollback().await;

    // Even a view the owner made (running with the owner's rights) stays isolated: RLS is
    // forced on the owner too.
    let admin = connect(&pg_admin(), &fixture.app.database).await;
    admin
        .batch_execute(
            "CREATE VIEW owner_view AS SELECT * FROM users; ALTER VIEW owner_view OWNER TO tenantd_owner;
             GRANT SELECT ON owner_view TO tenantd_app;",
        )
        .await
        .expect("owner view");
    fixture.begin_as(&fixture.tenant_a).await;
    let rows: Vec<String> = fixture
        .client
        .query("SELECT tenant_id::text FROM owner_view", &[])
        .await
        .expect("select through the view")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rows, vec![fixture.tenant_a.clone()], "control: A's own row, and only it");
    fixture.rollback().await;
    let none = fixture.client.query("SELECT 1 FROM owner_view", &[]).await.expect("select without tenant");
    assert!(none.is_empty());
    fixture.app.stop().await;
}
