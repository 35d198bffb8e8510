//! The tenant transaction: the one door to tenant data.

use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::TenantContext;
use crate::db::PgPool;
use crate::error::{Error, Result};

diesel::define_sql_function! {
    /// PostgreSQL's `set_config(setting_name, new_value, is_local)`.
    fn set_config(setting_name: Text, new_value: Text, is_local: Bool) -> Text;
}

/// A connection inside a transaction whose `app.tenant_id` is set to one tenant. Only
/// [`TenantDb::run`] creates it, so holding one proves the setting is in place.
pub struct TenantTx<'c> {
    connection: &'c mut AsyncPgConnection,
    context: TenantContext,
}

impl TenantTx<'_> {
    /// The tenant this transaction is scoped to.
    pub fn tenant_id(&self) -> Uuid {
        self.context.tenant_id()
    }

    /// The context of the request this transaction serves (for audit).
    pub fn context(&self) -> &TenantContext {
        &self.context
    }

    /// The underlying connection, for repositories of tenant tables.
    pub(crate) fn connection(&mut self) -> &mut AsyncPgConnection {
        self.connection
    }
}

/// Runs work against tenant tables.
#[derive(Clone)]
pub struct TenantDb {
    pool: PgPool,
}

impl TenantDb {
    /// Wraps the app-role pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Like [`TenantDb::run`] for work that only reads: if the connection is lost, the
    /// work is run again on a fresh one (see [`crate::db::retry`]). `work` must be safe to
    /// repeat.
    pub async fn read<R, F>(&self, context: &TenantContext, work: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'t, 'c> Fn(&'t mut TenantTx<'c>) -> BoxFuture<'t, Result<R>> + Clone + Send + 'static,
    {
        crate::db::retry::read(|| self.run(context, work.clone())).await
    }

    /// The pool, for the registry's global tables (which have no tenant).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks out a connection, begins a transaction, runs
    /// `SELECT set_config('app.tenant_id', $1, true)` with the tenant as a bind parameter,
    /// runs `work`, and commits (or rolls back if `work` fails).
    ///
    /// The setting is transaction-local: it dies with the transaction, so a pooled
    /// connection never carries a tenant into another request. (A later tier with a
    /// schema per tenant adds `SET LOCAL search_path` here, without changing callers.)
    ///
    /// Cancellation: if this future is dropped (the client cancelled, or a deadline
    /// passed) while the transaction is open, diesel-async marks the connection broken
    /// and the pool discards it instead of reusing it; PostgreSQL rolls the transaction
    /// back when the connection closes.
    pub async fn run<R, F>(&self, context: &TenantContext, work: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'t, 'c> FnOnce(&'t mut TenantTx<'c>) -> BoxFuture<'t, Result<R>> + Send + 'static,
    {
        let context = context.clone();
        let tenant_id = context.tenant_id();
        let mut connection = self.pool.get().await?;
        let outcome = connection
            .transaction::<R, Error, _>(async move |connection| {
                diesel::select(set_config("app.tenant_id", tenant_id.to_string(), true)).execute(connection).await?;
                let mut transaction = TenantTx { connection, context };
                work(&mut transaction).await
            })
            .await;
        outcome.map_err(|error| classify(&mut connection, error))
    }

    /// Runs work on the registry's global tables (`tenants` and its identifiers), which
    /// have no tenant; there is no tenant setting, so tenant tables show no rows.
    pub async fn global<R, F>(&self, work: F) -> Result<R>
    where
        F: for<'c> FnOnce(&'c mut AsyncPgConnection) -> BoxFuture<'c, Result<R>>,
    {
        let mut connection = self.pool.get().await?;
        let outcome = work(&mut connection).await;
        outcome.map_err(|error| classify(&mut connection, error))
    }
}

/// A failure on a connection that is now closed (PostgreSQL shut down or restarted, the
/// network dropped) is UNAVAILABLE, whatever error the driver reported; the pool discards
/// the connection.
fn classify(connection: &mut AsyncPgConnection, error: Error) -> Error {
    use diesel_async::pooled_connection::PoolableConnection;
    match error {
        Error::Internal(source) if connection.is_broken() => {
            Error::Unavailable { reason: "DATABASE_UNAVAILABLE", source: source.context("the connection closed") }
        }
        other => other,
    }
}
