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

/// Whether PostgreSQL can be reached, as the last connection attempt or health probe saw
/// it. A failed connect (by the pool, or by the probe) marks it down; a successful one marks
/// it up. While it is down, [`checkout`] fails at once with UNAVAILABLE
/// (`DATABASE_UNAVAILABLE`), rather than waiting out the pool's acquire timeout and then
/// reporting an exhausted pool; a request already waiting fails as soon as a connect fails.
/// Requests do not connect while it is down: the probe (every health interval) finds it up
/// again. Until the first attempt it is up.
#[derive(Debug, Clone, Default)]
pub struct Availability {
    shared: std::sync::Arc<AvailabilityState>,
}

#[derive(Debug, Default)]
struct AvailabilityState {
    down: AtomicBool,
    /// Why the last connect failed, for the log (never sent to clients).
    cause: std::sync::Mutex<String>,
    /// Wakes the requests waiting for a connection when a connect fails.
    went_down: tokio::sync::Notify,
}

impl Availability {
    /// Records that connecting failed, and why.
    pub fn mark_down(&self, cause: &dyn std::fmt::Display) {
        if let Ok(mut last) = self.shared.cause.lock() {
            *last = cause.to_string();
        }
        self.shared.down.store(true, Ordering::Release);
        self.shared.went_down.notify_waiters();
    }

    /// Records that connecting succeeded.
    pub fn mark_up(&self) {
        self.shared.down.store(false, Ordering::Release);
    }

    /// Whether the last attempt to connect failed.
    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::Acquire)
    }

    fn unavailable(&self) -> crate::error::Error {
        let cause = self.shared.cause.lock().map(|cause| cause.clone()).unwrap_or_default();
        let source = anyhow::anyhow!("PostgreSQL cannot be reached: {cause}");
        crate::error::Error::unavailable(crate::error::Reason::DatabaseUnavailable, source)
    }
}

/// Checks out a pooled connection: at once UNAVAILABLE (`DATABASE_UNAVAILABLE`) while
/// PostgreSQL is known to be down, and as soon as a connect fails while waiting; a timeout
/// with PostgreSQL reachable is an exhausted pool (`DATABASE_POOL_EXHAUSTED`).
pub async fn checkout<'p>(
    pool: &'p PgPool,
    availability: &Availability,
) -> crate::error::Result<bb8::PooledConnection<'p, AppConnectionManager>> {
    if availability.is_down() {
        return Err(availability.unavailable());
    }
    // Created before waiting starts, so that a connect failing meanwhile is not missed.
    let went_down = availability.shared.went_down.notified();
    tokio::select! {
        biased;
        checked_out = pool.get() => match checked_out {
            Ok(connection) => Ok(connection),
            Err(bb8::RunError::TimedOut) if availability.is_down() => Err(availability.unavailable()),
            Err(error) => Err(error.into()),
        },
        () = went_down => Err(availability.unavailable()),
    }
}

/// bb8 hands every failed connect here (it retries in the background until the acquire
/// timeout); each one marks PostgreSQL down.
#[derive(Debug, Clone)]
struct MarkDownOnConnectError(Availability);

impl bb8::ErrorSink<PoolError> for MarkDownOnConnectError {
    fn sink(&self, error: PoolError) {
        self.0.mark_down(&error);
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<PoolError>> {
        Box::new(self.clone())
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
    availability: Availability,
}

impl bb8::ManageConnection for AppConnectionManager {
    type Connection = AppConnection;
    type Error = PoolError;

    async fn connect(&self) -> Result<AppConnection, PoolError> {
        let connection = self.inner.connect().await?;
        self.availability.mark_up();
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
/// Every connect, failed or not, is reported to `availability`.
pub fn build_pool(database_url: &str, max_size: u32, acquire_timeout: Duration, availability: &Availability) -> PgPool {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let inner = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    bb8::Pool::builder()
        .max_size(max_size)
        .min_idle(None)
        .connection_timeout(acquire_timeout)
        .test_on_check_out(false)
        .retry_connection(true)
        .error_sink(Box::new(MarkDownOnConnectError(availability.clone())))
        .build_unchecked(AppConnectionManager { inner, availability: availability.clone() })
}
