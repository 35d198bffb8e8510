//! The tenant transaction: the one door to tenant data. [`crate::tenancy::TenantDb`] opens
//! it for a request's tenant; repositories of tenant tables take what it hands out.
//!
//! Every transaction on tenant tables starts with two statements of their own:
//! `BEGIN`, then `SET LOCAL app.tenant_id = '<uuid>'` (see [`set_tenant_statement`]). They
//! are not awaited one by one: they are written to PostgreSQL together with the work's
//! first statement, so a read costs one round trip and a write saves two.
//!
//! Why this is still fail-closed: PostgreSQL runs pipelined statements in order, and once a
//! statement of a transaction block fails, it refuses every later one ("current transaction
//! is aborted") until the block ends. If the tenant setting fails, nothing behind it runs.
//! If BEGIN itself failed, the work would run with no tenant at all, where the policy
//! (`nullif(current_setting('app.tenant_id', true), '')::uuid`) matches no row.
//!
//! Why the order holds: diesel-async and tokio-postgres write requests in the order their
//! futures are first polled, and both joins below poll in argument order within one task.
//! A statement that misses diesel-async's statement cache is prepared first; diesel-async
//! holds the cache lock from before that Parse until its Bind/Execute is written (no await
//! in between), and tokio's mutex is FIFO, so the pipelined COMMIT of a read (which goes
//! through the same lock) can never overtake the statement it follows. The tenant tables
//! use only built-in SQL types, so no type lookup runs before the cache lock is taken.
//! `a_read_on_a_fresh_connection_runs_inside_its_tenant` proves it on an empty cache.
//!
//! A schema tenant's transaction sends a third statement of its own between the tenant
//! setting and the work: `SET LOCAL search_path = "tenant_<hex>", public` (see
//! [`set_search_path_statement`]), in the same write, so routing costs no round trip. It
//! is pipelined like the tenant setting and just as fail-closed: if it fails, nothing behind
//! it runs. The tier comes from the caller (the cached tenant record), never from a query.

use std::future::Future;

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::result::OptionalExtension;
use diesel_async::methods::LoadQuery;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use futures_util::future::BoxFuture;
use futures_util::join;
use uuid::Uuid;

use super::tenant_schema::{IsolationTier, set_search_path_statement};
use super::{AppConnection, Availability, Connection, PgPool, checkout};
use crate::error::{Error, Result};
use crate::telemetry::traces::{self, ChildSpan};

/// The fixed text before the tenant id in [`set_tenant_statement`].
pub const SET_TENANT_PREFIX: &str = "SET LOCAL app.tenant_id = '";

/// The statement that scopes a transaction to `tenant_id`:
/// `SET LOCAL app.tenant_id = '<uuid>'`.
///
/// `SET` takes no bind parameter, so this is the one place where a value enters SQL text.
/// The value is a typed [`Uuid`] written in its canonical hyphenated form: 36 characters of
/// `[0-9a-f-]`, which cannot close the quote. It is sent as a statement of its own (Citus
/// forwards a SET's whole query string to its workers), and `LOCAL`: it ends with the
/// transaction, so a pooled connection never carries a tenant into another request.
pub fn set_tenant_statement(tenant_id: Uuid) -> String {
    let mut buffer = Uuid::encode_buffer();
    let canonical = tenant_id.hyphenated().encode_lower(&mut buffer);
    format!("{SET_TENANT_PREFIX}{canonical}'")
}

/// An `AsyncFnOnce(T) -> R` whose future has a name, so that a bound can require it to
/// be `Send` for every lifetime of `T` (which `AsyncFnOnce` alone cannot yet express).
/// Every async closure implements it.
pub trait AsyncWork<T, R>: AsyncFnOnce(T) -> R + FnOnce(T) -> <Self as AsyncWork<T, R>>::Future {
    /// The future the work returns.
    type Future: Future<Output = R>;
}

impl<F, T, Fut, R> AsyncWork<T, R> for F
where
    F: AsyncFnOnce(T) -> R + FnOnce(T) -> Fut,
    Fut: Future<Output = R>,
{
    type Future = Fut;
}

/// Who a transaction's request acts for, as audit events record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditActor {
    /// `platform`, `api_key` or `system`.
    pub actor_type: &'static str,
    /// Key id or empty.
    pub actor_id: String,
    /// The request's id.
    pub request_id: String,
}

/// An open transaction scoped to one tenant, for work of several statements. Only [`run`]
/// creates it, so holding one proves the tenant setting was sent first.
pub struct TenantTx<'c> {
    connection: Connection<'c>,
    tenant_id: Uuid,
    actor: AuditActor,
    events_recorded: bool,
}

impl<'c> TenantTx<'c> {
    /// The tenant this transaction is scoped to.
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// Who the request this transaction serves acts for (for audit).
    pub fn actor(&self) -> &AuditActor {
        &self.actor
    }

    /// The underlying connection, for repositories of tenant tables.
    pub(crate) fn connection(&mut self) -> &mut Connection<'c> {
        &mut self.connection
    }

    /// Notes that this transaction wrote an audit event, so that its commit wakes the
    /// event stream (see [`run`]).
    pub(crate) fn note_event_recorded(&mut self) {
        self.events_recorded = true;
    }
}

/// An open transaction scoped to one tenant that runs exactly one statement. Only [`read`]
/// creates it. Its methods take it by value and send COMMIT right behind
/// the statement, so BEGIN, the tenant setting, the statement and COMMIT leave in one
/// write: a read costs one round trip.
pub struct TenantRead<'c> {
    connection: &'c AppConnection,
    tenant_id: Uuid,
}

impl<'c> TenantRead<'c> {
    /// Polls `statement` first (so it is written, or its Parse is, and the cache lock taken),
    /// then a COMMIT that waits behind it.
    async fn then_commit<T>(self, statement: impl Future<Output = QueryResult<T>>) -> QueryResult<T> {
        let mut connection: Connection<'c> = self.connection;
        // A prepared COMMIT, not `batch_execute`: it must take the statement-cache lock.
        let commit = Commit.execute(&mut connection);
        let (outcome, committed) = join!(statement, commit);
        // After a failed statement, PostgreSQL runs this COMMIT as a ROLLBACK: the block
        // is over either way. If COMMIT itself failed, the state is unknown and the
        // connection stays marked open, so the pool discards it.
        committed?;
        self.connection.mark_transaction_closed();
        outcome
    }
}

/// Where a repository function of one statement runs: a one-statement read
/// ([`TenantRead`], which commits right behind it) or one step of a longer transaction
/// (`&mut TenantTx`). Repository functions that need more than one statement take
/// `&mut TenantTx`.
///
/// The methods return boxed futures (diesel-async boxes every query future already):
/// a concrete `Send` type, so the async closures given to [`run`] and [`read`] stay provably
/// `Send` for every lifetime of the transaction, which opaque futures with lifetime
/// bounds are not yet (rust-lang/rust#100013).
pub trait TenantQuery<'c>: Sized {
    /// The tenant the transaction is scoped to.
    fn tenant_id(&self) -> Uuid;

    /// Runs `query` and returns every row.
    fn load<'q, Q, U>(self, query: Q) -> BoxFuture<'q, QueryResult<Vec<U>>>
    where
        'c: 'q,
        Q: LoadQuery<'q, Connection<'c>, U> + Send + 'q,
        U: Send + 'q;

    /// Runs `query` and returns its first row, if any.
    fn optional<'q, Q, U>(self, query: Q) -> BoxFuture<'q, QueryResult<Option<U>>>
    where
        'c: 'q,
        Q: LoadQuery<'q, Connection<'c>, U> + Send + 'q,
        U: Send + 'q;
}

impl<'c> TenantQuery<'c> for &mut TenantTx<'c> {
    fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    fn load<'q, Q, U>(self, query: Q) -> BoxFuture<'q, QueryResult<Vec<U>>>
    where
        'c: 'q,
        Q: LoadQuery<'q, Connection<'c>, U> + Send + 'q,
        U: Send + 'q,
    {
        let mut connection = self.connection;
        Box::pin(async move { query.load(&mut connection).await })
    }

    fn optional<'q, Q, U>(self, query: Q) -> BoxFuture<'q, QueryResult<Option<U>>>
    where
        'c: 'q,
        Q: LoadQuery<'q, Connection<'c>, U> + Send + 'q,
        U: Send + 'q,
    {
        let mut connection = self.connection;
        Box::pin(async move { query.get_result(&mut connection).await.optional() })
    }
}

impl<'c> TenantQuery<'c> for TenantRead<'c> {
    fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    fn load<'q, Q, U>(self, query: Q) -> BoxFuture<'q, QueryResult<Vec<U>>>
    where
        'c: 'q,
        Q: LoadQuery<'q, Connection<'c>, U> + Send + 'q,
        U: Send + 'q,
    {
        Box::pin(async move {
            let mut connection: Connection<'c> = self.connection;
            let rows = query.load(&mut connection);
            self.then_commit(rows).await
        })
    }

    fn optional<'q, Q, U>(self, query: Q) -> BoxFuture<'q, QueryResult<Option<U>>>
    where
        'c: 'q,
        Q: LoadQuery<'q, Connection<'c>, U> + Send + 'q,
        U: Send + 'q,
    {
        Box::pin(async move {
            let mut connection: Connection<'c> = self.connection;
            let row = query.get_result(&mut connection);
            self.then_commit(async move { row.await.optional() }).await
        })
    }
}

/// `COMMIT` as a prepared statement with a static query id, so diesel-async caches it
/// like any other statement (`sql_query` text is prepared anew each time) and it goes
/// through the statement-cache lock.
#[derive(Debug, Clone, Copy)]
struct Commit;

impl QueryId for Commit {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for Commit {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("COMMIT");
        Ok(())
    }
}

/// Runs work of several statements in one transaction scoped to `tenant_id`: checks out a
/// connection, sends BEGIN, the tenant setting and the work's first statement together,
/// runs the rest of the work, and commits (or rolls back if anything failed). The checkout
/// fails at once while `availability` says PostgreSQL is down (see [`checkout`]).
///
/// Returns whether the committed work recorded an audit event (see
/// [`TenantTx::note_event_recorded`]) with its value.
///
/// Cancellation: if this future is dropped (the client cancelled, or a deadline passed)
/// while the transaction is open, the connection stays marked open and the pool discards
/// it instead of reusing it; PostgreSQL rolls the transaction back when the connection
/// closes.
pub async fn run<R, F>(
    pool: &PgPool,
    availability: &Availability,
    tenant_id: Uuid,
    tier: IsolationTier,
    actor: AuditActor,
    work: F,
) -> Result<(R, bool)>
where
    R: Send,
    F: for<'t, 'c> AsyncWork<&'t mut TenantTx<'c>, Result<R>, Future: Send> + Send,
{
    let span = trace("tenant transaction", Some(tenant_id));
    let outcome = async {
        let mut pooled = checkout(pool, availability).await?;
        let outcome = {
            let connection: &AppConnection = &pooled;
            connection.mark_transaction_open();
            let mut transaction = TenantTx { connection, tenant_id, actor, events_recorded: false };
            let scope =
                Scope { route_write: Some(route_write_statement(tenant_id)), ..scope_statements(tenant_id, tier) };
            let (begun, worked) = join!(begin(connection, &scope), work(&mut transaction));
            let events_recorded = transaction.events_recorded;
            end(connection, begun.map_err(Error::from).and(worked)).await.map(|value| (value, events_recorded))
        };
        outcome.map_err(|error| classify(&mut pooled, error))
    };
    span.end_with(outcome.await)
}

/// Runs a read of one statement in one transaction scoped to `tenant_id`, in one round
/// trip (see [`TenantRead`]).
pub async fn read<R, F>(
    pool: &PgPool,
    availability: &Availability,
    tenant_id: Uuid,
    tier: IsolationTier,
    work: F,
) -> Result<R>
where
    R: Send,
    F: for<'c> AsyncWork<TenantRead<'c>, Result<R>, Future: Send> + Send,
{
    let span = trace("tenant read", Some(tenant_id));
    let outcome = async {
        let mut pooled = checkout(pool, availability).await?;
        let outcome = {
            let connection: &AppConnection = &pooled;
            connection.mark_transaction_open();
            let scope = scope_statements(tenant_id, tier);
            let (begun, worked) = join!(begin(connection, &scope), work(TenantRead { connection, tenant_id }));
            let outcome = begun.map_err(Error::from).and(worked);
            // Still open when the work sent no statement, or failed before sending it.
            if connection.transaction_open() { end(connection, outcome).await } else { outcome }
        };
        outcome.map_err(|error| classify(&mut pooled, error))
    };
    span.end_with(outcome.await)
}

/// Runs work on the registry's global tables (`tenants` and its identifiers), which have
/// no tenant; there is no tenant setting, so tenant tables show no rows.
pub async fn global<R, F>(pool: &PgPool, availability: &Availability, work: F) -> Result<R>
where
    R: Send,
    F: for<'t, 'c> AsyncWork<&'t mut Connection<'c>, Result<R>, Future: Send> + Send,
{
    let span = trace("registry query", None);
    let outcome = async {
        let mut pooled = checkout(pool, availability).await?;
        let outcome = {
            let mut connection: Connection<'_> = &pooled;
            work(&mut connection).await
        };
        outcome.map_err(|error| classify(&mut pooled, error))
    };
    span.end_with(outcome.await)
}

/// The child span of a transaction (from the pool checkout to COMMIT or ROLLBACK), when the
/// request is traced.
fn trace(name: &'static str, tenant_id: Option<Uuid>) -> ChildSpan {
    traces::child_span(name, || {
        let mut attributes = vec![opentelemetry::KeyValue::new("db.system.name", "postgresql")];
        attributes.extend(tenant_id.map(|id| opentelemetry::KeyValue::new("tenant.id", id.to_string())));
        attributes
    })
}

/// The statements that scope a transaction, after BEGIN: the tenant setting, for a
/// schema tenant the search path to its schema, and for work that may write the write
/// route (see [`route_write_statement`]).
struct Scope {
    set_tenant: String,
    set_search_path: Option<String>,
    route_write: Option<String>,
}

fn scope_statements(tenant_id: Uuid, tier: IsolationTier) -> Scope {
    Scope {
        set_tenant: set_tenant_statement(tenant_id),
        set_search_path: (tier == IsolationTier::Schema).then(|| set_search_path_statement(tenant_id)),
        route_write: None,
    }
}

/// The fixed text before the tenant id in [`route_write_statement`].
pub const ROUTE_WRITE_PREFIX: &str = "SELECT tenantd_route_write('";

/// `SELECT tenantd_route_write('<uuid>')`: the first statement of every transaction that may
/// write (decision 0019). It takes the tenant's move lock shared, so a tenant's writes wait
/// while a move cuts over (and only that tenant's), and routes the rest of the transaction
/// by the tier the registry records at that moment, so a write that waited lands on the tier
/// the tenant moved to even though the request was admitted with the old one. Built only from
/// the [`Uuid`], like the tenant setting; pipelined behind it in the same write.
pub fn route_write_statement(tenant_id: Uuid) -> String {
    let mut buffer = Uuid::encode_buffer();
    let canonical = tenant_id.hyphenated().encode_lower(&mut buffer);
    format!("{ROUTE_WRITE_PREFIX}{canonical}')")
}

/// Sends BEGIN, the tenant setting and (for a schema tenant) the search path, each a
/// statement of its own, without waiting for any: whatever the caller polls next is written
/// behind them.
///
/// diesel-async's transaction manager does not see this BEGIN (it would await BEGIN alone).
/// The transaction is tracked instead by [`AppConnection`]'s flag, which every caller raises
/// with `mark_transaction_open` before calling this and lowers only after COMMIT or
/// ROLLBACK was answered, so the pool discards a connection left inside it.
async fn begin(connection: &AppConnection, scope: &Scope) -> QueryResult<()> {
    let (mut first, mut second, mut third): (Connection<'_>, Connection<'_>, Connection<'_>) =
        (connection, connection, connection);
    let route = async {
        match &scope.set_search_path {
            Some(statement) => third.batch_execute(statement).await,
            None => Ok(()),
        }
    };
    let mut fourth: Connection<'_> = connection;
    let route_write = async {
        match &scope.route_write {
            Some(statement) => fourth.batch_execute(statement).await,
            None => Ok(()),
        }
    };
    let (begun, set, routed, write_routed) =
        join!(first.batch_execute("BEGIN"), second.batch_execute(&scope.set_tenant), route, route_write);
    begun.and(set).and(routed).and(write_routed)
}

/// Ends the transaction: COMMIT after success, ROLLBACK after a failure. The connection is
/// marked closed only once PostgreSQL has answered.
async fn end<R>(connection: &AppConnection, outcome: Result<R>) -> Result<R> {
    let mut shared: Connection<'_> = connection;
    match outcome {
        Ok(value) => {
            shared.batch_execute("COMMIT").await?;
            connection.mark_transaction_closed();
            Ok(value)
        }
        Err(error) => {
            if shared.batch_execute("ROLLBACK").await.is_ok() {
                connection.mark_transaction_closed();
            }
            Err(error)
        }
    }
}

/// A failure on a connection that is now closed (PostgreSQL shut down or restarted, the
/// network dropped) is UNAVAILABLE, whatever error the driver reported; the pool discards
/// the connection.
fn classify(connection: &mut AppConnection, error: Error) -> Error {
    use diesel_async::pooled_connection::PoolableConnection;
    if (**connection).is_broken() { error.on_closed_connection() } else { error }
}

#[cfg(test)]
mod tests;
