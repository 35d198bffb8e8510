//! Embedded migrations, run by `tenantd migrate` and `tenantd serve --migrate`: the
//! diesel migrations of the shared tables, then the tenant-schema migrations of every schema
//! tenant ([`migrate_tenant_schemas`]).

use anyhow::Context;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::cli::MigrateArgs;
use crate::db::connect::PgTarget;
use crate::db::tenant_schema::{self, SchemaMigrated};

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

/// What [`migrate_tenant_schemas`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// Schemas that had migrations applied.
    pub migrated: usize,
    /// The tenants of those schemas.
    pub migrated_tenants: Vec<uuid::Uuid>,
    /// Schemas that were already current.
    pub current: usize,
    /// Schemas that failed, by name, with the error (each rolled back to where it was).
    pub failed: Vec<(String, String)>,
}

/// Brings every provisioned tenant schema to the latest tenant-schema migration
/// ([`tenant_schema::migrate_schema`]), `parallelism` schemas at a time, each on its own
/// connection of the migration role and in its own transaction. Idempotent and resumable:
/// a schema's version is stamped in the transaction that migrates it, so a rerun after a
/// crash skips every schema that committed. A failing schema is reported by name and does
/// not stop the others. Progress is a bar on a terminal, otherwise counts in the log every
/// few seconds ([`crate::progress`]); the outcome's counts are logged at the end.
pub async fn migrate_tenant_schemas(database_url: &str, parallelism: usize) -> anyhow::Result<SchemaReport> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct SchemaTenant {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: uuid::Uuid,
    }
    let target = PgTarget::parse(database_url).context("TENANTD_MIGRATION_DATABASE_URL")?;
    let mut listing = target.connect().await.context("connecting with the migration database URL")?;
    let tenants: Vec<SchemaTenant> = diesel::sql_query(
        "SELECT id FROM tenants WHERE isolation_tier = 'schema' AND schema_version IS NOT NULL ORDER BY id",
    )
    .load(&mut listing)
    .await
    .context("listing schema tenants")?;
    drop(listing);
    let total = tenants.len();
    let queue = Arc::new(Mutex::new(tenants.into_iter().map(|tenant| tenant.id).collect::<VecDeque<_>>()));
    let report = Arc::new(Mutex::new(SchemaReport::default()));
    // A bar on a terminal, counts in the log otherwise (crate::progress).
    let progress = Arc::new(Mutex::new(crate::progress::Progress::start(
        "migrating tenant schemas",
        "schemas",
        Some(total as u64),
        crate::progress::Fallback::Log,
    )));
    let workers = (0..parallelism.clamp(1, 64)).map(|_| {
        let (queue, report, target, progress) = (queue.clone(), report.clone(), target.clone(), progress.clone());
        async move {
            let mut connection = None;
            loop {
                let Some(tenant_id) = queue.lock().ok().and_then(|mut queue| queue.pop_front()) else { return };
                let outcome = match &mut connection {
                    Some(connection) => Ok(connection),
                    None => target.connect().await.map(|opened| connection.insert(opened)),
                };
                let outcome = match outcome {
                    Ok(connection) => {
                        tenant_schema::migrate_schema(connection, tenant_id).await.map_err(|error| error.to_string())
                    }
                    Err(error) => Err(format!("connecting: {error}")),
                };
                let Ok(mut report) = report.lock() else { return };
                match outcome {
                    Ok(SchemaMigrated::Applied(_)) => {
                        report.migrated += 1;
                        report.migrated_tenants.push(tenant_id);
                    }
                    Ok(SchemaMigrated::Current | SchemaMigrated::NoSchema) => report.current += 1,
                    Err(error) => {
                        let schema = tenant_schema::schema_name(tenant_id);
                        tracing::error!(schema = %schema, error = %error, "tenant schema migration failed");
                        report.failed.push((schema, error));
                        // The connection may be broken; the next schema opens a fresh one.
                        connection = None;
                    }
                }
                drop(report);
                if let Ok(mut progress) = progress.lock() {
                    progress.advance(1);
                }
            }
        }
    });
    futures_util::future::join_all(workers).await;
    if let Some(progress) = Arc::into_inner(progress).and_then(|progress| progress.into_inner().ok()) {
        progress.finish();
    }
    log_progress(&report, total);
    let report = report.lock().map_err(|_| anyhow::anyhow!("a migration worker panicked"))?.clone();
    Ok(report)
}

fn log_progress(report: &Mutex<SchemaReport>, total: usize) {
    if let Ok(report) = report.lock() {
        let done = report.migrated + report.current + report.failed.len();
        tracing::info!(
            done,
            total,
            migrated = report.migrated,
            current = report.current,
            failed = report.failed.len(),
            "migrating tenant schemas"
        );
    }
}

/// `tenantd migrate`: the shared tables, then every tenant schema. Fails (after trying every
/// schema) if any schema failed, naming each.
pub async fn run_command(args: MigrateArgs) -> anyhow::Result<()> {
    let url = args.migration_database_url.expose_secret();
    let applied = run_pending(url).await?;
    tracing::info!(applied, "migrations are current");
    let report = migrate_tenant_schemas(url, args.schema_parallelism).await?;
    announce_migrated(&args, &report.migrated_tenants).await;
    if !report.failed.is_empty() {
        let names: Vec<&str> = report.failed.iter().map(|(schema, _)| schema.as_str()).collect();
        anyhow::bail!("{} tenant schema(s) failed to migrate: {}", names.len(), names.join(", "));
    }
    tracing::info!(migrated = report.migrated, current = report.current, "tenant schemas are current");
    Ok(())
}

/// Tells every replica (through Redis, like a suspension does) to forget its cached record of
/// each migrated tenant, so the tenant is served again at once instead of after the cache TTL
/// (its cached record still says its schema is behind). Best effort: without
/// `--redis-url`, or with Redis down, the records expire with their TTL.
async fn announce_migrated(args: &MigrateArgs, tenant_ids: &[uuid::Uuid]) {
    if tenant_ids.is_empty() {
        return;
    }
    let Some(url) = &args.redis_url else {
        tracing::info!(
            tenants = tenant_ids.len(),
            "no --redis-url: replicas see the migrated schemas when their cached records expire"
        );
        return;
    };
    let timeout = std::time::Duration::from_secs(1);
    let redis = if args.redis_cluster {
        crate::cache::RedisCache::cluster(url.expose_secret(), timeout)
    } else {
        crate::cache::RedisCache::new(url.expose_secret(), None, 1, timeout)
    };
    let redis = match redis {
        Ok(redis) => redis,
        Err(error) => {
            tracing::warn!(error = %error, "bad Redis URL; replicas see the migrated schemas after the cache TTL");
            return;
        }
    };
    // A new cache skips every operation until a probe has found Redis up.
    if !redis.probe().await {
        tracing::warn!("cannot reach Redis; replicas see the migrated schemas after the cache TTL");
        return;
    }
    for tenant_id in tenant_ids {
        crate::tenancy::resolver::announce_invalidation(&redis, *tenant_id).await;
    }
    tracing::info!(tenants = tenant_ids.len(), "announced the migrated tenants to every replica");
}
