//! The door to tenant data for a request: [`TenantDb`] opens the tenant transaction of
//! [`crate::db::tenant_tx`] for a [`TenantContext`]'s tenant, and records who acts.

use std::sync::{Arc, OnceLock};

use uuid::Uuid;

use super::TenantContext;
use crate::db::audit::AuditActor;
use crate::db::tenant_tx::{self, AsyncWork, TenantRead, TenantTx};
use crate::db::{Availability, Connection, PgPool, SchemaGate};
use crate::error::Result;

/// What is called, with the tenant's id, after a transaction that recorded audit events
/// has committed: the event stream's wake-up (decision 0015). It must not block.
pub type EventsCommitted = Arc<dyn Fn(Uuid) + Send + Sync>;

/// Runs work against tenant tables.
#[derive(Clone)]
pub struct TenantDb {
    pool: PgPool,
    availability: Availability,
    schema: SchemaGate,
    events_committed: Arc<OnceLock<EventsCommitted>>,
}

impl TenantDb {
    /// Wraps the app-role pool, built with `availability` (see [`crate::db::build_pool`]).
    pub fn new(pool: PgPool, availability: Availability) -> Self {
        Self { pool, availability, schema: SchemaGate::default(), events_committed: Arc::default() }
    }

    /// What the health probe reports reachability to: while PostgreSQL is known to be down,
    /// every transaction fails at once with UNAVAILABLE (`DATABASE_UNAVAILABLE`).
    pub fn availability(&self) -> Availability {
        self.availability.clone()
    }

    /// Sets what is called after a transaction that recorded audit events commits (once;
    /// later calls are ignored). Every clone of this `TenantDb` shares it.
    pub fn on_events_committed(&self, signal: EventsCommitted) {
        let _ = self.events_committed.set(signal);
    }

    /// Calls what [`TenantDb::on_events_committed`] set, for events of `tenant_id` that a
    /// transaction outside this door committed (a purge's or a tenant move's cutover, on the
    /// provisioning role's connection).
    pub fn events_committed(&self, tenant_id: Uuid) {
        if let Some(signal) = self.events_committed.get() {
            signal(tenant_id);
        }
    }

    /// What the health probe reports the schema state to: while the database is known to
    /// be behind its migrations, every transaction fails at once with UNAVAILABLE.
    pub fn schema_gate(&self) -> SchemaGate {
        self.schema.clone()
    }

    /// The pool, for the registry's global tables (which have no tenant).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs work of several statements in one tenant transaction (see
    /// [`tenant_tx::run`]): BEGIN, the tenant setting and the first statement in one write.
    pub async fn run<R, F>(&self, context: &TenantContext, work: F) -> Result<R>
    where
        R: Send,
        F: for<'t, 'c> AsyncWork<&'t mut TenantTx<'c>, Result<R>, Future: Send> + Send,
    {
        self.schema.check()?;
        let (value, events_recorded) =
            tenant_tx::run(&self.pool, &self.availability, context.tenant_id(), context.tier(), actor(context), work)
                .await?;
        if events_recorded && let Some(signal) = self.events_committed.get() {
            signal(context.tenant_id());
        }
        Ok(value)
    }

    /// Runs a read of one statement in one tenant transaction, in one round trip (see
    /// [`TenantRead`]). If the connection is lost, the read is run again on a fresh one
    /// (see [`crate::db::retry`]); `work` must be safe to repeat.
    pub async fn read<R, F>(&self, context: &TenantContext, work: F) -> Result<R>
    where
        R: Send,
        F: for<'c> AsyncWork<TenantRead<'c>, Result<R>, Future: Send> + Clone + Send,
    {
        self.schema.check()?;
        let (tenant_id, tier): (Uuid, _) = (context.tenant_id(), context.tier());
        crate::db::retry::read(|| tenant_tx::read(&self.pool, &self.availability, tenant_id, tier, work.clone())).await
    }

    /// Runs a read of several statements like [`TenantDb::run`], retried like
    /// [`TenantDb::read`]; `work` must be safe to repeat.
    pub async fn read_steps<R, F>(&self, context: &TenantContext, work: F) -> Result<R>
    where
        R: Send,
        F: for<'t, 'c> AsyncWork<&'t mut TenantTx<'c>, Result<R>, Future: Send> + Clone + Send,
    {
        crate::db::retry::read(|| self.run(context, work.clone())).await
    }

    /// Runs work on the registry's global tables (`tenants` and its identifiers), which
    /// have no tenant; there is no tenant setting, so tenant tables show no rows.
    pub async fn global<R, F>(&self, work: F) -> Result<R>
    where
        R: Send,
        F: for<'t, 'c> AsyncWork<&'t mut Connection<'c>, Result<R>, Future: Send> + Send,
    {
        self.schema.check()?;
        tenant_tx::global(&self.pool, &self.availability, work).await
    }
}

/// Who `context`'s request acts for, as its audit events record it.
fn actor(context: &TenantContext) -> AuditActor {
    let request = context.request();
    AuditActor {
        actor_type: request.actor().kind(),
        actor_id: request.actor().id(),
        request_id: request.request_id().to_owned(),
    }
}
