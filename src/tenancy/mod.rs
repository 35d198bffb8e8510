//! Tenancy: who the tenant is, and the one door to its data.
//!
//! - [`selector`] parses and validates tenant metadata before any I/O;
//! - [`resolver`] turns a selector into a live tenant (cache first);
//! - [`TenantContext`] is what the gateway's admission layer (`crate::api::gateway`) hands
//!   handlers through request extensions, once it has used both;
//! - [`TenantDb`] runs the tenant transaction, the only way to reach tenant tables.

mod context;
pub mod resolver;
pub mod selector;
mod transaction;

pub use context::{Actor, RequestContext, Scope, TenantContext};
pub use transaction::{
    AsyncWork, SET_TENANT_PREFIX, TenantDb, TenantQuery, TenantRead, TenantTx, set_tenant_statement,
};
