//! Tenancy: who the tenant is, and the one door to its data.
//!
//! - [`selector`] parses and validates tenant metadata before any I/O;
//! - [`resolver`] turns a selector into a live tenant (cache first);
//! - [`layer`] is the tower layer that does both in front of data-plane services and
//!   hands handlers a [`TenantContext`] through request extensions;
//! - [`TenantDb`] opens the tenant transaction ([`crate::db::tenant_tx`]) for a request's
//!   tenant: the only way to reach tenant tables.

mod context;
pub mod layer;
pub mod resolver;
pub mod selector;
mod state;
mod transaction;

pub use context::{Actor, RequestContext, Scope, TenantContext};
pub use state::TenantState;
pub use transaction::TenantDb;
