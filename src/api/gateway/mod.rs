//! The gateway: small tower layers in front of each tenantd service. They are applied per
//! service, never server-wide, so health and reflection answer with no metadata at all, as
//! Kubernetes probes send none. Outermost first:
//! - [`observe`]: RPC count and latency by service, method and code, and the one `info`
//!   line per RPC. Outermost, so that refused requests are counted and logged too.
//! - [`admission`]: authentication and tenant admission, I/O-free checks first; it puts a
//!   [`RequestContext`](crate::tenancy::RequestContext) (control plane) or a
//!   [`TenantContext`](crate::tenancy::TenantContext) (data plane) in the request extensions.
//! - [`rate_limit`] (data plane and the event stream): the tenant's and the API key's request
//!   rates, one Redis call; a refused request goes no further, so it never reaches PostgreSQL.
//! - [`usage`] (data plane): counts tenant activity and notes API key use, in memory.
//!   Innermost, so that only admitted requests are counted.
//!
//! Both refusing layers answer through [`refusal`], which reads the refused request's body
//! first, so refusals never cost the client its connection.
//!
//! One layer is server-wide, health and reflection included: [`deadline`], the RPC timeout
//! (an idle timeout for ImportTenant's upload), in place of tonic's `Server::timeout`.
//!
//! The server's per-RPC span ([`crate::telemetry::rpc_span`]) carries what the layers learn
//! (`request.id`, `tenant.id`) to every line logged for the request.

pub mod admission;
pub mod deadline;
pub mod observe;
pub mod rate_limit;
mod refusal;
pub mod usage;

use std::sync::Arc;

use tower::layer::util::Stack;

pub use admission::{AdmissionLayer, REQUEST_ID_HEADER};
pub use deadline::DeadlineLayer;
pub use observe::ObserveLayer;
pub use rate_limit::RateLimitLayer;
pub use usage::UsageLayer;

use crate::auth::PlatformAuth;
use crate::domain::key_uses::KeyUseRecorder;
use crate::domain::usage::UsageCounter;
use crate::tenancy::rate_limiter::RateLimiter;
use crate::tenancy::resolver::TenantResolver;

/// The layers of a control-plane service: observe, then admission.
pub type ControlPlaneLayers = Stack<AdmissionLayer, ObserveLayer>;

/// The layers of the event stream: observe, then admission, then rate limits.
pub type EventsLayers = Stack<RateLimitLayer, Stack<AdmissionLayer, ObserveLayer>>;

/// The layers of a data-plane service: observe, then admission, then rate limits, then usage.
pub type DataPlaneLayers = Stack<UsageLayer, EventsLayers>;

/// The gateway of control-plane services: platform callers only (operator keys, whose
/// records `resolver` finds, and the bootstrap token).
pub fn control_plane(auth: PlatformAuth, resolver: Arc<TenantResolver>, observe: ObserveLayer) -> ControlPlaneLayers {
    Stack::new(AdmissionLayer::control_plane(auth, resolver), observe)
}

/// The gateway of the event stream: platform callers, or API keys for their own tenant
/// (whose stream opens count against the tenant's and the key's rate limits).
pub fn events(
    auth: PlatformAuth,
    resolver: Arc<TenantResolver>,
    limiter: Arc<RateLimiter>,
    observe: ObserveLayer,
) -> EventsLayers {
    let admitted = Stack::new(AdmissionLayer::events(auth, resolver), observe);
    Stack::new(RateLimitLayer::new(limiter), admitted)
}

/// The gateway of data-plane services: tenant resolution, platform or API-key callers, rate
/// limits and usage counting.
pub fn data_plane(
    auth: PlatformAuth,
    resolver: Arc<TenantResolver>,
    limiter: Arc<RateLimiter>,
    usage: (Arc<KeyUseRecorder>, Arc<UsageCounter>),
    observe: ObserveLayer,
) -> DataPlaneLayers {
    let admitted = Stack::new(AdmissionLayer::data_plane(auth, resolver), observe);
    let limited = Stack::new(RateLimitLayer::new(limiter), admitted);
    Stack::new(UsageLayer::new(usage.0, usage.1), limited)
}

/// What the layers' unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::cache::RedisCache;
    use crate::db::PgPool;
    use crate::tenancy::TenantDb;
    use crate::tenancy::resolver::TenantResolver;

    /// A pool, a Redis client and a resolver, all built without connecting, for PostgreSQL
    /// and Redis that listen nowhere: whatever reaches them fails UNAVAILABLE, so a layer
    /// test that passes did no I/O.
    pub(crate) fn unreachable_dependencies() -> (PgPool, RedisCache, Arc<TenantResolver>) {
        let timeout = Duration::from_millis(100);
        let availability = crate::db::Availability::default();
        let target = crate::db::connect::PgTarget::parse("postgres://nobody@127.0.0.1:1/nowhere").expect("a URL");
        let pool = crate::db::build_pool(target, 1, timeout, &availability);
        let redis = RedisCache::new("redis://127.0.0.1:1", None, 1, timeout).expect("a well-formed Redis URL");
        let resolver = Arc::new(TenantResolver::new(
            TenantDb::new(pool.clone(), availability),
            redis.clone(),
            Duration::from_secs(60),
        ));
        (pool, redis, resolver)
    }
}
