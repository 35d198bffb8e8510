//! Tenancy: who the tenant is, and the one door to its data.
//!
//! - [`selector`] parses and validates tenant metadata before any I/O;
//! - [`resolver`] turns a selector into a live tenant (cache first);
//! - [`TenantContext`] is what the gateway's admission layer (`crate::api::gateway`) hands
//!   handlers through request extensions, once it has used both;
//! - [`TenantDb`] opens the tenant transaction ([`crate::db::tenant_tx`]) for a request's
//!   tenant: the only way to reach tenant tables.

mod context;
mod limits;
pub mod rate_limiter;
pub mod resolver;
pub mod selector;
mod state;
mod transaction;

pub use crate::db::tenant_schema::IsolationTier;
pub use context::{Actor, OperatorRole, Permission, Readmission, RequestContext, Scope, TenantContext};
pub use limits::{Limits, Quota, Quotas, RateLimit, RateLimits};
pub use state::{TenantState, Transition};
pub use transaction::{EventsCommitted, TenantDb};
