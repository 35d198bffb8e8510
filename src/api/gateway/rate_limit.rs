//! Rate limits at the boundary (decision 0017): behind admission, before any handler and so
//! before any database work, each request of a tenant is counted against its tenant's limit
//! and, when made with an API key, the key's limit ([`RateLimiter`]: one Redis script call).
//! A refused request is answered here with RESOURCE_EXHAUSTED `RATE_LIMITED`, a
//! `google.rpc.QuotaFailure` naming the limit and a `google.rpc.RetryInfo` saying when one
//! more request would be admitted.
//!
//! The limits come from the [`TenantRecord`] admission put in the request extensions, so
//! they cost no query. A request without a tenant (a platform caller on the event stream)
//! is passed on: the limits are a tenant's.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::server::NamedService;
use tower::{Layer, Service};

use crate::error::{Error, Reason};
use crate::tenancy::TenantContext;
use crate::tenancy::rate_limiter::{LimitedBy, RateLimiter, Refusal};
use crate::tenancy::resolver::TenantRecord;

/// Builds [`RateLimited`] services.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
}

impl RateLimitLayer {
    /// Counts requests with `limiter`.
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited { limiter: self.limiter.clone(), inner }
    }
}

/// A service behind the [`RateLimitLayer`]: reached only by requests within their limits.
#[derive(Clone)]
pub struct RateLimited<S> {
    limiter: Arc<RateLimiter>,
    inner: S,
}

impl<S: NamedService> NamedService for RateLimited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for RateLimited<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is not ready; swap so the instance that was polled ready is called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let extensions = request.extensions();
        let (Some(context), Some(record)) = (extensions.get::<TenantContext>(), extensions.get::<TenantRecord>())
        else {
            return Box::pin(inner.call(request));
        };
        let context = context.clone();
        let limits = record.limits;
        let limiter = self.limiter.clone();
        Box::pin(async move {
            match limiter.check_request(&context, &limits).await {
                Ok(_) => inner.call(request).await,
                Err(refusal) => Ok(super::refusal::refuse(request, refused(context.tenant_id(), refusal).into()).await),
            }
        })
    }
}

/// The error of a refused request: the limit as a QuotaFailure subject, the delay as RetryInfo.
fn refused(tenant_id: uuid::Uuid, refusal: Refusal) -> Error {
    let subject = match refusal.limited_by {
        LimitedBy::Tenant => format!("tenant:{tenant_id}"),
        LimitedBy::ApiKey(key_id) => format!("api_key:{key_id}"),
    };
    let limit = refusal.limit;
    let description = format!("at most {} requests per second, {} at once", limit.per_second, limit.burst);
    Error::quota_exceeded(Reason::RateLimited, subject, description, Some(refusal.retry_after))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tonic_types::StatusExt;
    use tower::ServiceExt;
    use uuid::Uuid;

    use super::*;
    use crate::api::gateway::testing;
    use crate::tenancy::{Actor, RateLimit, RateLimits, RequestContext, TenantState};

    #[tokio::test]
    async fn a_request_past_its_keys_limit_is_refused_with_quota_failure_and_retry_info_before_the_service() {
        // Redis listens nowhere, so the local fallback counts (one replica: the whole limit).
        let (_, redis, _) = testing::unreachable_dependencies();
        let layer = RateLimitLayer::new(Arc::new(RateLimiter::new(redis, 1)));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let inner = tower::service_fn(move |_: http::Request<tonic::body::Body>| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty())) }
        });
        let (tenant, key_id) = (Uuid::now_v7(), Uuid::now_v7());
        let limits = RateLimits {
            tenant: Some(RateLimit { per_second: 100, burst: 100 }),
            api_key: Some(RateLimit { per_second: 1, burst: 2 }),
        };
        let request = |actor: Actor, limits: RateLimits| {
            let mut request = http::Request::new(tonic::body::Body::empty());
            request.extensions_mut().insert(TenantContext::new(tenant, RequestContext::new(actor, "r".to_owned())));
            request.extensions_mut().insert(TenantRecord {
                state: TenantState::Active,
                limits,
                tier: Default::default(),
                schema_current: true,
                plan: None,
                quotas: Default::default(),
                limits_changed_at: None,
                plan_revision: None,
            });
            request
        };
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let response = layer.layer(inner.clone()).oneshot(request(Actor::ApiKey { key_id }, limits)).await;
            statuses.push(tonic::Status::from_header_map(response.expect("infallible").headers()));
        }
        assert!(statuses[0].is_none() && statuses[1].is_none(), "the key's burst of 2 is admitted");
        let refused = statuses[2].as_ref().expect("the third request is refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let details = refused.get_error_details();
        assert_eq!(details.error_info().map(|info| info.reason.as_str()), Some("RATE_LIMITED"));
        let violations = &details.quota_failure().expect("a QuotaFailure").violations;
        assert_eq!(violations[0].subject, format!("api_key:{key_id}"));
        let delay = details.retry_info().and_then(|info| info.retry_delay).expect("a RetryInfo delay");
        assert!(delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_secs(1), "{delay:?}");
        assert_eq!(calls.load(Ordering::Relaxed), 2, "the refused request never reached the service");

        // Control: the platform acting for the tenant has no key limit, only the tenant's.
        let response = layer.layer(inner.clone()).oneshot(request(Actor::Bootstrap, limits)).await;
        assert!(tonic::Status::from_header_map(response.expect("infallible").headers()).is_none());
        // And a request without a tenant passes untouched.
        let response = layer.layer(inner.clone()).oneshot(http::Request::new(tonic::body::Body::empty())).await;
        assert!(tonic::Status::from_header_map(response.expect("infallible").headers()).is_none());
        assert_eq!(calls.load(Ordering::Relaxed), 4);
    }
}
