//! grpc.health.v1 statuses, driven by a background task that probes the dependencies.
//!
//! Service names:
//! - `""` (readiness) and the tenant services' names: SERVING when PostgreSQL answers as the
//!   app role, its migrations are current, that role is bound by row-level security (not a
//!   superuser, no BYPASSRLS, owner of nothing), on Citus the app role's `SET LOCAL` reaches
//!   the workers (its `citus.propagate_set_commands` is `local`), and shutdown has not begun.
//!   `""` starts NOT_SERVING (tonic-health would start it SERVING).
//! - `postgres`, `redis`: each dependency's own state.
//! - `tenant_schemas`: SERVING when every schema tenant's schema has reached the tenant-schema
//!   migrations this build expects; NOT_SERVING while any is behind (those tenants' requests
//!   fail UNAVAILABLE, `TENANT_SCHEMA_BEHIND`, and `tenantd migrate` fixes them). It does not
//!   affect `""`: one tenant's schema must not take the replica out for every tenant.
//! - `liveness`: SERVING until shutdown begins, never tied to a dependency.
//!
//! The task publishes only when a status changes, so Watch streams see transitions only.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::cache::RedisCache;
use crate::db::connect::PgTarget;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::diagnostics_service_server::DiagnosticsServiceServer;
use crate::proto::document_service_server::DocumentServiceServer;
use crate::proto::setting_service_server::SettingServiceServer;
use crate::proto::tenant_service_server::TenantServiceServer;
use crate::proto::user_service_server::UserServiceServer;

/// The readiness service name.
pub const READINESS: &str = "";
/// The liveness service name.
pub const LIVENESS: &str = "liveness";
/// PostgreSQL's service name.
pub const POSTGRES: &str = "postgres";
/// Redis's service name.
pub const REDIS: &str = "redis";
/// The tenant schemas' service name.
pub const TENANT_SCHEMAS: &str = "tenant_schemas";

/// Names that report readiness.
fn readiness_names() -> [&'static str; 7] {
    [
        READINESS,
        <TenantServiceServer<crate::api::TenantApi> as NamedService>::NAME,
        <UserServiceServer<crate::api::UserApi> as NamedService>::NAME,
        <DocumentServiceServer<crate::api::DocumentApi> as NamedService>::NAME,
        <SettingServiceServer<crate::api::SettingApi> as NamedService>::NAME,
        <AuditServiceServer<crate::api::AuditApi> as NamedService>::NAME,
        <DiagnosticsServiceServer<crate::api::DiagnosticsApi> as NamedService>::NAME,
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observed {
    postgres: bool,
    migrations_current: bool,
    /// Without citus always true; with it, whether the app role's `SET LOCAL` reaches the
    /// workers.
    tenant_setting_propagates: bool,
    /// Whether the role tenantd connects as is bound by row-level security.
    role_bound_by_rls: bool,
    redis: bool,
    /// Whether no schema tenant's schema is behind (false when it could not be checked).
    tenant_schemas_current: bool,
}

struct Published {
    observed: Option<Observed>,
    shutting_down: bool,
}

/// Owns the health reporter; every status change goes through it.
pub struct Health {
    reporter: HealthReporter,
    published: Mutex<Published>,
}

impl Health {
    /// Wraps a reporter and sets the starting statuses: everything NOT_SERVING but
    /// liveness.
    pub async fn new(reporter: HealthReporter) -> Self {
        for name in readiness_names().into_iter().chain([POSTGRES, REDIS, TENANT_SCHEMAS]) {
            reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
        reporter.set_service_status(LIVENESS, ServingStatus::Serving).await;
        Self { reporter, published: Mutex::new(Published { observed: None, shutting_down: false }) }
    }

    async fn publish(&self, observed: Observed) {
        let mut published = self.published.lock().await;
        if published.shutting_down || published.observed == Some(observed) {
            return;
        }
        published.observed = Some(observed);
        let ready = observed.postgres
            && observed.migrations_current
            && observed.tenant_setting_propagates
            && observed.role_bound_by_rls;
        for name in readiness_names() {
            self.reporter.set_service_status(name, status(ready)).await;
        }
        self.reporter.set_service_status(POSTGRES, status(observed.postgres)).await;
        self.reporter.set_service_status(REDIS, status(observed.redis)).await;
        self.reporter.set_service_status(TENANT_SCHEMAS, status(observed.tenant_schemas_current)).await;
        tracing::info!(
            ready,
            postgres = observed.postgres,
            migrations_current = observed.migrations_current,
            tenant_setting_propagates = observed.tenant_setting_propagates,
            role_bound_by_rls = observed.role_bound_by_rls,
            redis = observed.redis,
            tenant_schemas_current = observed.tenant_schemas_current,
            "health changed"
        );
    }

    /// First step of shutdown: readiness and liveness go NOT_SERVING, and the probe task
    /// stops publishing.
    pub async fn begin_shutdown(&self) {
        let mut published = self.published.lock().await;
        published.shutting_down = true;
        for name in readiness_names().into_iter().chain([LIVENESS]) {
            self.reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
    }

    /// Last step of shutdown: forgets every status, which ends open Watch streams so
    /// their connections can drain.
    pub async fn close_watches(&self) {
        let mut reporter = self.reporter.clone();
        for name in readiness_names().into_iter().chain([POSTGRES, REDIS, TENANT_SCHEMAS, LIVENESS]) {
            reporter.clear_service_status(name).await;
        }
    }
}

fn status(serving: bool) -> ServingStatus {
    if serving { ServingStatus::Serving } else { ServingStatus::NotServing }
}

/// Whether tenant transactions can work on this database. Without citus they always can.
/// With citus, the tenant transaction's `SET LOCAL app.tenant_id` reaches the workers only
/// if the app role's effective `citus.propagate_set_commands` is `local`; otherwise the
/// workers' RLS sees no tenant: reads find nothing and writes fail.
fn serves_tenant_transactions(citus: bool, propagate_set_commands: Option<&str>) -> bool {
    !citus || propagate_set_commands.is_some_and(|value| value.eq_ignore_ascii_case("local"))
}

/// What one PostgreSQL probe sees, in one round trip on the app-role connection.
#[derive(Debug, QueryableByName)]
struct DatabaseProbe {
    /// The newest applied migration.
    #[diesel(sql_type = Nullable<Text>)]
    latest_migration: Option<String>,
    /// Whether the citus extension is installed in this database.
    #[diesel(sql_type = Bool)]
    citus: bool,
    /// The app role's effective `citus.propagate_set_commands` (NULL: not set, and citus
    /// not loaded).
    #[diesel(sql_type = Nullable<Text>)]
    propagate_set_commands: Option<String>,
    /// The role tenantd connects as.
    #[diesel(sql_type = Text)]
    role: String,
    /// Whether that role escapes row-level security: a superuser, BYPASSRLS, or the owner
    /// of any relation (an owner can turn its table's RLS off).
    #[diesel(sql_type = Bool)]
    escapes_rls: bool,
}

const DATABASE_PROBE: &str = "SELECT (SELECT max(version)::text FROM __diesel_schema_migrations) AS latest_migration, \
     EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS citus, \
     current_setting('citus.propagate_set_commands', true) AS propagate_set_commands, \
     current_user::text AS role, \
     (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) \
     OR EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%') AS escapes_rls";

/// Probes PostgreSQL (on a dedicated app-role connection, so a saturated pool cannot
/// make a healthy database look down) and Redis, with timeouts.
pub struct Prober {
    database: PgTarget,
    connection: Option<AsyncPgConnection>,
    redis: RedisCache,
    latest_migration: String,
    timeout: Duration,
    /// The `citus.propagate_set_commands` value last warned about, so the warning is
    /// logged when it changes, not on every probe.
    warned_setting: Option<Option<String>>,
    /// The unsafe role last logged about, likewise.
    warned_role: Option<String>,
    /// The probe failure last logged about: a failure is logged when its cause changes,
    /// not on every probe.
    warned_probe: Option<String>,
    /// Told whether the migrations are current, so requests fail fast while they are not.
    schema_gate: Option<crate::db::SchemaGate>,
    /// Told whether PostgreSQL answers, so requests fail fast while it does not.
    availability: Option<crate::db::Availability>,
}

impl Prober {
    /// A prober for the app-role `database` that expects `latest_migration`.
    pub fn new(database: PgTarget, redis: RedisCache, latest_migration: String, timeout: Duration) -> Self {
        Self {
            database,
            connection: None,
            redis,
            latest_migration,
            timeout,
            warned_setting: None,
            warned_role: None,
            warned_probe: None,
            schema_gate: None,
            availability: None,
        }
    }

    /// Reports every probe to `availability`: a refused or failed connect or query marks
    /// PostgreSQL down, so requests fail at once; an answer marks it up. A probe that only
    /// timed out changes nothing (a busy machine is not an outage; requests then wait for the
    /// pool as usual).
    pub fn reporting_availability_to(mut self, availability: crate::db::Availability) -> Self {
        self.availability = Some(availability);
        self
    }

    /// Reports every probe's view of the migrations to `gate`.
    pub fn reporting_schema_to(mut self, gate: crate::db::SchemaGate) -> Self {
        self.schema_gate = Some(gate);
        self
    }

    async fn observe(&mut self) -> Observed {
        let (postgres, redis) = tokio::join!(
            tokio::time::timeout(self.timeout, probe_postgres(&self.database, &mut self.connection)),
            self.redis.probe(),
        );
        let probed = match postgres {
            Ok(Ok(probed)) => Some(probed),
            Ok(Err(error)) => {
                if let Some(availability) = &self.availability {
                    availability.mark_down(&format_args!("{error:#}"));
                }
                self.warn_probe_failed(format!("{error:#}"));
                self.connection = None;
                None
            }
            Err(_elapsed) => {
                self.warn_probe_failed(format!("no answer within {:?}", self.timeout));
                self.connection = None;
                None
            }
        };
        if let Some(availability) = self.availability.as_ref().filter(|_| probed.is_some()) {
            availability.mark_up();
        }
        if probed.is_some() && self.warned_probe.take().is_some() {
            tracing::info!("postgres probe succeeded again");
        }
        let postgres = probed.is_some();
        let probe = probed.flatten();
        let migrations_current = probe
            .as_ref()
            .and_then(|probe| probe.latest_migration.as_deref())
            .is_some_and(|version| version >= self.latest_migration.as_str());
        // Only a database that answered can be known to be behind.
        if let Some(gate) = self.schema_gate.as_ref().filter(|_| postgres) {
            gate.set_current(migrations_current);
        }
        let tenant_setting_propagates = probe
            .as_ref()
            .is_some_and(|probe| serves_tenant_transactions(probe.citus, probe.propagate_set_commands.as_deref()));
        if tenant_setting_propagates {
            self.warned_setting = None;
        } else if let Some(probe) = &probe {
            self.warn_once(probe.propagate_set_commands.clone());
        }
        let role_bound_by_rls = probe.as_ref().is_some_and(|probe| !probe.escapes_rls);
        match &probe {
            Some(probe) if probe.escapes_rls => self.warn_unsafe_role(&probe.role),
            _ => self.warned_role = None,
        }
        let tenant_schemas_current = match self.connection.as_mut().filter(|_| migrations_current) {
            Some(connection) => match tokio::time::timeout(self.timeout, schemas_behind(connection)).await {
                Ok(Ok(behind)) => {
                    if !behind.is_empty() {
                        tracing::warn!(schemas = ?behind, "tenant schemas are behind their migrations: run tenantd migrate");
                    }
                    behind.is_empty()
                }
                _ => false,
            },
            None => false,
        };
        Observed {
            postgres,
            migrations_current,
            tenant_setting_propagates,
            role_bound_by_rls,
            redis,
            tenant_schemas_current,
        }
    }

    /// Says why a Citus database is not served, once per value of the setting. The probe
    /// connection keeps the value it logged in with, as do pooled connections: after the
    /// role is fixed, tenantd must reconnect, so readiness waits for a restart.
    fn warn_once(&mut self, setting: Option<String>) {
        if self.warned_setting.as_ref() == Some(&setting) {
            return;
        }
        tracing::warn!(
            citus.propagate_set_commands = setting.as_deref().unwrap_or("unset"),
            "not ready: citus.propagate_set_commands is {} for the app role, so SET LOCAL app.tenant_id does not \
             reach the workers; run tenantd migrate or ALTER ROLE tenantd_app SET citus.propagate_set_commands = \
             'local', then restart tenantd",
            setting.as_deref().unwrap_or("unset"),
        );
        self.warned_setting = Some(setting);
    }

    /// Logs why PostgreSQL looks down (a missing database, refused authentication, a
    /// connection refused...) at WARN, once per cause.
    fn warn_probe_failed(&mut self, cause: String) {
        if self.warned_probe.as_ref() != Some(&cause) {
            tracing::warn!(error = %cause, "postgres probe failed: not ready");
            self.warned_probe = Some(cause);
        }
    }

    /// Says, loudly and once, why tenantd will not report ready as this role: row-level
    /// security, the isolation between tenants, would not bind it.
    fn warn_unsafe_role(&mut self, role: &str) {
        if self.warned_role.as_deref() == Some(role) {
            return;
        }
        tracing::error!(
            role,
            "not ready: tenantd connects as {role}, a superuser, a BYPASSRLS role or the owner of a table, which \
             row-level security does not bind, so tenants would not be isolated; set TENANTD_DATABASE_URL to the \
             app role (tenantd_app, created by tenantd migrate), which owns nothing and cannot bypass RLS"
        );
        self.warned_role = Some(role.to_owned());
    }

    /// Probes every `interval` until `stop` is cancelled.
    pub async fn run(mut self, health: std::sync::Arc<Health>, interval: Duration, stop: CancellationToken) {
        loop {
            let observed = self.observe().await;
            health.publish(observed).await;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// The newest applied migration version and the Citus facts, reconnecting first if
/// needed. `Ok(None)`: connected, but the migrations table is missing or unreadable.
/// Up to ten schemas of schema tenants (not deleted) whose schema is behind
/// [`crate::db::tenant_schema::latest_schema_version`].
async fn schemas_behind(connection: &mut AsyncPgConnection) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct Behind {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: uuid::Uuid,
    }
    let rows: Vec<Behind> = diesel::sql_query(
        "SELECT id FROM tenants WHERE isolation_tier = 'schema' AND schema_version IS NOT NULL \
         AND schema_version <> $1 AND state <> 'deleted' ORDER BY id LIMIT 10",
    )
    .bind::<Text, _>(crate::db::tenant_schema::latest_schema_version())
    .load(connection)
    .await?;
    Ok(rows.into_iter().map(|row| crate::db::tenant_schema::schema_name(row.id)).collect())
}

async fn probe_postgres(
    database: &PgTarget,
    slot: &mut Option<AsyncPgConnection>,
) -> anyhow::Result<Option<DatabaseProbe>> {
    if slot.is_none() {
        *slot = Some(database.connect().await?);
    }
    let connection = slot.as_mut().ok_or_else(|| anyhow::anyhow!("no connection"))?;
    let probed = diesel::sql_query(DATABASE_PROBE).get_result::<DatabaseProbe>(connection).await;
    match probed {
        Ok(probe) => Ok(Some(probe)),
        // The server went away (shut down, restarted, network lost).
        Err(error) if diesel_async::pooled_connection::PoolableConnection::is_broken(connection) => Err(error.into()),
        // Connected, but the migrations table is missing or unreadable: not current.
        Err(diesel::result::Error::DatabaseError(..)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::serves_tenant_transactions;

    #[test]
    fn without_citus_the_setup_serves_whatever_the_setting() {
        assert!(serves_tenant_transactions(false, None));
        assert!(serves_tenant_transactions(false, Some("none")));
        assert!(serves_tenant_transactions(false, Some("local")));
    }

    #[test]
    fn with_citus_only_local_propagation_serves() {
        assert!(serves_tenant_transactions(true, Some("local")));
        assert!(!serves_tenant_transactions(true, Some("none")));
        assert!(!serves_tenant_transactions(true, None));
        assert!(!serves_tenant_transactions(true, Some("")));
    }
}
