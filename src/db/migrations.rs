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

/// Applies every pending migration and returns how many ran.
pub async fn run_pending(database_url: &str) -> anyhow::Result<usize> {
    with_connection(database_url, |connection| {
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
