//! grpc.health.v1 statuses, driven by a background task that probes the dependencies.
//!
//! Service names:
//! - `""` (readiness), `tenantd.v1.TenantService`, `tenantd.v1.UserService`: SERVING when
//!   PostgreSQL answers as the app role and its migrations are current, and shutdown has
//!   not begun. `""` starts NOT_SERVING (tonic-health would start it SERVING).
//! - `postgres`, `redis`: each dependency's own state.
//! - `liveness`: SERVING until shutdown begins, never tied to a dependency.
//!
//! The task publishes only when a status changes, so Watch streams see transitions only.

use std::time::Duration;

use diesel::dsl::max;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::cache::RedisCache;
use crate::db::schema::__diesel_schema_migrations;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::diagnostics_service_server::DiagnosticsServiceServer;
use crate::proto::document_service_server::DocumentServiceServer;
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

/// Names that report readiness.
fn readiness_names() -> [&'static str; 6] {
    [
        READINESS,
        <TenantServiceServer<crate::api::TenantApi> as NamedService>::NAME,
        <UserServiceServer<crate::api::UserApi> as NamedService>::NAME,
        <DocumentServiceServer<crate::api::DocumentApi> as NamedService>::NAME,
        <AuditServiceServer<crate::api::AuditApi> as NamedService>::NAME,
        <DiagnosticsServiceServer<crate::api::DiagnosticsApi> as NamedService>::NAME,
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observed {
    postgres: bool,
    migrations_current: bool,
    redis: bool,
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
        for name in readiness_names().into_iter().chain([POSTGRES, REDIS]) {
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
        let ready = observed.postgres && observed.migrations_current;
        for name in readiness_names() {
            self.reporter.set_service_status(name, status(ready)).await;
        }
        self.reporter.set_service_status(POSTGRES, status(observed.postgres)).await;
        self.reporter.set_service_status(REDIS, status(observed.redis)).await;
        tracing::info!(
            ready,
            postgres = observed.postgres,
            migrations_current = observed.migrations_current,
            redis = observed.redis,
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
        for name in readiness_names().into_iter().chain([POSTGRES, REDIS, LIVENESS]) {
            reporter.clear_service_status(name).await;
        }
    }
}

fn status(serving: bool) -> ServingStatus {
    if serving { ServingStatus::Serving } else { ServingStatus::NotServing }
}

/// Probes PostgreSQL (on a dedicated app-role connection, so a saturated pool cannot
/// make a healthy database look down) and Redis, with timeouts.
pub struct Prober {
    database_url: String,
    connection: Option<AsyncPgConnection>,
    redis: RedisCache,
    latest_migration: String,
    timeout: Duration,
}

impl Prober {
    /// A prober for the app-role `database_url` that expects `latest_migration`.
    pub fn new(database_url: String, redis: RedisCache, latest_migration: String, timeout: Duration) -> Self {
        Self { database_url, connection: None, redis, latest_migration, timeout }
    }

    async fn observe(&mut self) -> Observed {
        let (postgres, redis) = tokio::join!(
            tokio::time::timeout(self.timeout, probe_postgres(&self.database_url, &mut self.connection)),
            self.redis.probe(),
        );
        let applied = match postgres {
            Ok(Ok(applied)) => Some(applied),
            Ok(Err(error)) => {
                tracing::debug!(error = %error, "postgres probe failed");
                self.connection = None;
                None
            }
            Err(_elapsed) => {
                self.connection = None;
                None
            }
        };
        Observed {
            postgres: applied.is_some(),
            migrations_current: applied.flatten().is_some_and(|version| version >= self.latest_migration),
            redis,
        }
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

/// The newest applied migration version, reconnecting first if needed.
async fn probe_postgres(database_url: &str, slot: &mut Option<AsyncPgConnection>) -> anyhow::Result<Option<String>> {
    if slot.is_none() {
        *slot = Some(AsyncPgConnection::establish(database_url).await?);
    }
    let connection = slot.as_mut().ok_or_else(|| anyhow::anyhow!("no connection"))?;
    let applied = __diesel_schema_migrations::table
        .select(max(__diesel_schema_migrations::version))
        .get_result::<Option<String>>(connection)
        .await;
    match applied {
        Ok(version) => Ok(version),
        // The server went away (shut down, restarted, network lost).
        Err(error) if diesel_async::pooled_connection::PoolableConnection::is_broken(connection) => Err(error.into()),
        // Connected, but the migrations table is missing or unreadable: not current.
        Err(diesel::result::Error::DatabaseError(..)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}
