//! PostgreSQL: the connection pool, migrations, schema and repositories.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};

pub mod api_keys;
pub mod audit;
pub mod documents;
pub mod idempotency;
pub mod identifiers;
pub mod migrations;
pub mod retry;
pub(crate) mod schema;
pub mod tenants;
pub mod users;

/// The pool of app-role connections.
pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

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
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    bb8::Pool::builder()
        .max_size(max_size)
        .min_idle(None)
        .connection_timeout(acquire_timeout)
        .test_on_check_out(false)
        .retry_connection(true)
        .build_unchecked(manager)
}
