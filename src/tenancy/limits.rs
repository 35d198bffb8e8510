//! The request-rate limits admission enforces for a tenant: the effective values of its plan
//! and its overrides, carried in the cached [`super::resolver::TenantRecord`] so that checking
//! them costs no query.

use serde::{Deserialize, Serialize};

/// A sustained rate with a burst allowance (a GCRA / token bucket's two parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests admitted per second, sustained; at least 1.
    pub per_second: u32,
    /// Requests admitted at once after a quiet period; at least 1.
    pub burst: u32,
}

/// The rate limits of a tenant; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    /// All of the tenant's data-plane requests together.
    pub tenant: Option<RateLimit>,
    /// Each of the tenant's API keys alone.
    pub api_key: Option<RateLimit>,
}
