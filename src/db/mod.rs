//! PostgreSQL: the connection pool, migrations, schema and repositories.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, PoolableConnection, RecyclingMethod,
};

pub mod api_keys;
pub mod audit;
pub mod documents;
pub mod events;
pub mod idempotency;
pub mod identifiers;
pub mod migrations;
pub mod resource;
pub mod retry;
pub(crate) mod schema;
pub mod settings;
pub mod tenant_tx;
pub mod tenants;
pub mod users;

/// The pool of app-role connections.
pub type PgPool = bb8::Pool<AppConnectionManager>;

/// Whether the database's migrations are current, as the health probe last saw it. Tenant
/// transactions on a database known to be behind fail at once with UNAVAILABLE
/// (`DATABASE_NOT_MIGRATED`, "run tenantd migrate") instead of meeting a missing table.
/// Until the first probe it is unknown, and nothing is refused.
#[derive(Debug, Clone, Default)]
pub struct SchemaGate {
    behind: std::sync::Arc<AtomicBool>,
}

impl SchemaGate {
    /// Records what the probe saw.
    pub fn set_current(&self, current: bool) {
        self.behind.store(!current, Ordering::Release);
    }

    /// `Err` while the database is known to be behind.
    pub fn check(&self) -> crate::error::Result<()> {
        if self.behind.load(Ordering::Acquire) {
            let source = anyhow::anyhow!("the database's migrations are not current; run tenantd migrate");
            return Err(crate::error::Error::unavailable(crate::error::Reason::DatabaseNotMigrated, source));
        }
        Ok(())
    }
}

/// How repositories reach PostgreSQL: a shared reference, so that statements issued
/// together are pipelined (diesel-async writes them in the order they are first polled).
pub type Connection<'c> = &'c AsyncPgConnection;

/// A pooled app-role connection that knows whether tenantd left a transaction open on it.
///
/// The tenant transaction sends BEGIN itself, pipelined with the statements behind it, so
/// diesel-async's transaction manager does not see it. The flag is raised before BEGIN is
/// sent and lowered only after COMMIT or ROLLBACK has been answered: a future dropped in
/// between (a cancelled RPC) leaves it raised, and the pool then discards the connection
/// instead of handing an open transaction, with its tenant setting, to the next request.
pub struct AppConnection {
    connection: AsyncPgConnection,
    transaction_open: AtomicBool,
}

impl AppConnection {
    /// Records that a transaction is about to begin on this connection.
    pub(crate) fn mark_transaction_open(&self) {
        self.transaction_open.store(true, Ordering::Release);
    }

    /// Records that PostgreSQL answered the COMMIT or ROLLBACK that ended the transaction.
    pub(crate) fn mark_transaction_closed(&self) {
        self.transaction_open.store(false, Ordering::Release);
    }

    /// Whether a transaction begun by tenantd has not been seen to end.
    pub fn transaction_open(&self) -> bool {
        self.transaction_open.load(Ordering::Acquire)
    }
}

impl Deref for AppConnection {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        &self.connection
    }
}

impl DerefMut for AppConnection {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        &mut self.connection
    }
}

/// diesel-async's manager, plus the open-transaction check of [`AppConnection`].
pub struct AppConnectionManager {
    inner: AsyncDieselConnectionManager<AsyncPgConnection>,
}

impl bb8::ManageConnection for AppConnectionManager {
    type Connection = AppConnection;
    type Error = PoolError;

    async fn connect(&self) -> Result<AppConnection, PoolError> {
        let connection = self.inner.connect().await?;
        Ok(AppConnection { connection, transaction_open: AtomicBool::new(false) })
    }

    async fn is_valid(&self, connection: &mut AppConnection) -> Result<(), PoolError> {
        self.inner.is_valid(&mut connection.connection).await
    }

    fn has_broken(&self, connection: &mut AppConnection) -> bool {
        connection.transaction_open() || connection.connection.is_broken()
    }
}

/// Builds the app-role pool without connecting: the server starts (NOT_SERVING) even
/// when PostgreSQL is not up yet, and connections are made on demand.
///
/// Checkout does not ping: a `SELECT 1` per checkout would add a round trip to every
/// request. A connection that died is detected by its first query (the request gets
/// UNAVAILABLE) and is then discarded by the pool; a connection returned with an open or
/// broken transaction (for example by a cancelled RPC) is discarded too, never reused.
pub fn build_pool(database_url: &str, max_size: u32, acquire_timeout: Duration) -> PgPool {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let inner = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    bb8::Pool::builder()
        .max_size(max_size)
        .min_idle(None)
        .connection_timeout(acquire_timeout)
        .test_on_check_out(false)
        .retry_connection(true)
        .build_unchecked(AppConnectionManager { inner })
}
