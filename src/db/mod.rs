//! PostgreSQL: the connection pool, migrations, schema and repositories.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, PoolableConnection, RecyclingMethod,
};

pub mod api_keys;
pub mod archives;
pub mod audit;
pub mod connect;
pub mod documents;
pub mod events;
pub mod idempotency;
pub mod identifiers;
pub mod migrations;
pub mod moves;
pub mod operations;
pub mod operators;
pub mod plans;
pub mod purge;
pub mod quotas;
pub mod resource;
pub mod retry;
pub(crate) mod schema;
pub mod settings;
pub mod tenant_schema;
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

/// Whether PostgreSQL can be reached. The health probe is the authority: a probe whose
/// connect or query failed marks it down, one that answered marks it up (as does any
/// successful pool connect). While it is down, [`checkout`] fails at once with UNAVAILABLE
/// (`DATABASE_UNAVAILABLE`), and requests already waiting for a connection are woken to
/// fail, rather than waiting out the pool's acquire timeout and then reporting an exhausted
/// pool. Requests do not connect while it is down; the next probe finds PostgreSQL again.
///
/// A failed pool connect alone does not mark it down (PostgreSQL may be up and only out of
/// connection slots, which the probe's own connection is not); it is remembered, so that a
/// wait that then times out is reported as `DATABASE_UNAVAILABLE`, not as an exhausted pool.
#[derive(Debug, Clone, Default)]
pub struct Availability {
    shared: std::sync::Arc<AvailabilityState>,
}

#[derive(Debug, Default)]
struct AvailabilityState {
    down: AtomicBool,
    /// Whether the pool's last connect failed.
    connect_failing: AtomicBool,
    /// Why the last probe or connect failed, for the log (never sent to clients).
    cause: std::sync::Mutex<String>,
    /// Wakes the requests waiting for a connection when PostgreSQL is found down.
    went_down: tokio::sync::Notify,
}

impl Availability {
    /// Records that the probe could not reach PostgreSQL, and why.
    pub fn mark_down(&self, cause: &dyn std::fmt::Display) {
        self.record_cause(cause);
        self.shared.down.store(true, Ordering::Release);
        self.shared.went_down.notify_waiters();
    }

    /// Records that PostgreSQL answered a probe or accepted a connection.
    pub fn mark_up(&self) {
        self.shared.connect_failing.store(false, Ordering::Release);
        self.shared.down.store(false, Ordering::Release);
    }

    /// Records that a pool connect failed, and why.
    fn record_connect_failure(&self, cause: &dyn std::fmt::Display) {
        self.record_cause(cause);
        self.shared.connect_failing.store(true, Ordering::Release);
    }

    fn record_cause(&self, cause: &dyn std::fmt::Display) {
        if let Ok(mut last) = self.shared.cause.lock() {
            *last = cause.to_string();
        }
    }

    /// Whether the last probe found PostgreSQL unreachable.
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
/// PostgreSQL is known to be down, and as soon as the probe finds it down while waiting; a
/// timeout after failed connects is `DATABASE_UNAVAILABLE` too, and only a timeout with
/// PostgreSQL reachable is an exhausted pool (`DATABASE_POOL_EXHAUSTED`).
pub async fn checkout<'p>(
    pool: &'p PgPool,
    availability: &Availability,
) -> crate::error::Result<bb8::PooledConnection<'p, AppConnectionManager>> {
    if availability.is_down() {
        return Err(availability.unavailable());
    }
    // Created before waiting starts, so that PostgreSQL found down meanwhile is not missed.
    let went_down = availability.shared.went_down.notified();
    tokio::select! {
        biased;
        checked_out = pool.get() => match checked_out {
            Ok(connection) => Ok(connection),
            Err(bb8::RunError::TimedOut)
                if availability.is_down() || availability.shared.connect_failing.load(Ordering::Acquire) =>
            {
                Err(availability.unavailable())
            }
            Err(error) => Err(error.into()),
        },
        () = went_down => Err(availability.unavailable()),
    }
}

/// bb8 hands every failed connect here (it retries in the background until the acquire
/// timeout, while the request waits).
#[derive(Debug, Clone)]
struct RecordConnectError(Availability);

impl bb8::ErrorSink<PoolError> for RecordConnectError {
    fn sink(&self, error: PoolError) {
        self.0.record_connect_failure(&error);
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
/// Connections are made by [`connect::PgTarget::connect`], with TLS when the URL asks for it.
/// Every connect, failed or not, is reported to `availability`.
pub fn build_pool(
    target: connect::PgTarget,
    max_size: u32,
    acquire_timeout: Duration,
    availability: &Availability,
) -> PgPool {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |_url| {
        let target = target.clone();
        Box::pin(async move { target.connect().await })
    });
    // The URL is not used: `custom_setup` connects to the parsed target.
    let inner = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config("", config);
    bb8::Pool::builder()
        .max_size(max_size)
        .min_idle(None)
        .connection_timeout(acquire_timeout)
        .test_on_check_out(false)
        .retry_connection(true)
        .error_sink(Box::new(RecordConnectError(availability.clone())))
        .build_unchecked(AppConnectionManager { inner, availability: availability.clone() })
}
