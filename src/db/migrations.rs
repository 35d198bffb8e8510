//! Embedded migrations, run by `tenantd migrate` and `tenantd serve --migrate`.

use anyhow::Context;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret;

use crate::cli::MigrateArgs;
use crate::db::connect::PgTarget;

/// Every migration under `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The version of the newest embedded migration; readiness requires the database to be
/// at least this far.
pub fn latest_version() -> anyhow::Result<String> {
    let migrations = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|error| anyhow::anyhow!("reading embedded migrations: {error}"))?;
    migrations.iter().map(|migration| migration.name().version().to_string()).max().context("no embedded migrations")
}

/// Applies every pending migration and returns how many ran, after checking that the role
/// may (see [`check_migration_role`]).
pub async fn run_pending(database_url: &str) -> anyhow::Result<usize> {
    with_connection(database_url, |connection| {
        check_migration_role(connection)?;
        connection
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|error| anyhow::anyhow!("running migrations: {error}"))
    })
    .await
}

/// Reverts every applied migration (tests use this to prove down migrations work).
pub async fn revert_all(database_url: &str) -> anyhow::Result<usize> {
    with_connection(database_url, |connection| {
        connection
            .revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|error| anyhow::anyhow!("reverting migrations: {error}"))
    })
    .await
}

/// What the migration role is allowed, as PostgreSQL sees it.
#[derive(diesel::QueryableByName)]
struct MigrationRole {
    #[diesel(sql_type = diesel::sql_types::Text)]
    role: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    database: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    superuser: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    create_role: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    owns_database: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    sets_citus_propagation: bool,
}

/// The migration role must be a superuser, or have everything the migrations need without
/// one: CREATEROLE (they create `tenantd_owner` and `tenantd_app` and pin their attributes),
/// ownership of the database (they create tables in, and revoke CREATE on, its schema
/// `public`), and the right to set `citus.propagate_set_commands` (they set it for the app
/// role). Checked first, so that a role missing one is told which, before anything changed.
fn check_migration_role(connection: &mut AsyncConnectionWrapper<AsyncPgConnection>) -> anyhow::Result<()> {
    use diesel::RunQueryDsl;
    let allowed: MigrationRole = diesel::sql_query(
        "SELECT current_user::text AS role, current_database()::text AS database, r.rolsuper AS superuser, \
         r.rolcreaterole AS create_role, pg_has_role(current_user, d.datdba, 'USAGE') AS owns_database, \
         has_parameter_privilege('citus.propagate_set_commands', 'SET') AS sets_citus_propagation \
         FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()",
    )
    .get_result(connection)
    .context("reading what the migration role may do")?;
    if allowed.superuser {
        return Ok(());
    }
    let MigrationRole { role, database, .. } = &allowed;
    let mut missing = Vec::new();
    if !allowed.create_role {
        missing.push(format!(
            "CREATEROLE (ALTER ROLE {role} CREATEROLE): the migrations create tenantd_owner and tenantd_app"
        ));
    }
    if !allowed.owns_database {
        missing.push(format!(
            "ownership of the database {database} (ALTER DATABASE {database} OWNER TO {role}, or let {role} create it): \
             the migrations create its tables and revoke CREATE on its schema public"
        ));
    }
    if !allowed.sets_citus_propagation {
        missing.push(format!(
            "GRANT SET ON PARAMETER citus.propagate_set_commands TO {role}: the migrations set it for tenantd_app"
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the migration role {role} is not a superuser and lacks: {}; grant these as a superuser (README, \"Migration \
         role\"), or migrate as a superuser",
        missing.join("; ")
    )
}

async fn with_connection<T: Send + 'static>(
    database_url: &str,
    work: impl FnOnce(&mut AsyncConnectionWrapper<AsyncPgConnection>) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let target = PgTarget::parse(database_url).context("TENANTD_MIGRATION_DATABASE_URL")?;
    let connection = target.connect().await.context("connecting with the migration database URL")?;
    // The harness is synchronous; it drives the async connection from a blocking thread.
    tokio::task::spawn_blocking(move || {
        let mut connection = AsyncConnectionWrapper::<AsyncPgConnection>::from(connection);
        work(&mut connection)
    })
    .await
    .context("migration task panicked")?
}

/// `tenantd migrate`.
pub async fn run_command(args: MigrateArgs) -> anyhow::Result<()> {
    let applied = run_pending(args.migration_database_url.expose_secret()).await?;
    tracing::info!(applied, "migrations are current");
    Ok(())
}
