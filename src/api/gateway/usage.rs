//! Usage counting for the data plane: each admitted request counts toward its tenant's
//! activity, and a request made with an API key notes the key's use (for its
//! `last_used_time`). Both are noted in memory, with no I/O on the request path; background
//! tasks flush them ([`UsageCounter::run`], [`KeyUseRecorder::run`]).
//!
//! The layer sits behind admission: a request reaches it only with the [`TenantContext`]
//! admission put in its extensions. One without a context (a service without admission in
//! front) is passed on uncounted.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tower::{Layer, Service};

use crate::domain::key_uses::KeyUseRecorder;
use crate::domain::usage::UsageCounter;
use crate::tenancy::{Actor, TenantContext};

/// Builds [`Usage`] services.
#[derive(Clone)]
pub struct UsageLayer {
    key_uses: Arc<KeyUseRecorder>,
    activity: Arc<UsageCounter>,
}

impl UsageLayer {
    /// Notes key uses in `key_uses` and counts tenant activity in `activity`.
    pub fn new(key_uses: Arc<KeyUseRecorder>, activity: Arc<UsageCounter>) -> Self {
        Self { key_uses, activity }
    }
}

impl<S> Layer<S> for UsageLayer {
    type Service = Usage<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Usage { layer: self.clone(), inner }
    }
}

/// A service behind the [`UsageLayer`].
#[derive(Clone)]
pub struct Usage<S> {
    layer: UsageLayer,
    inner: S,
}

impl<S: NamedService> NamedService for Usage<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Usage<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(context) = request.extensions().get::<TenantContext>() {
            let tenant_id = context.tenant_id();
            if let Actor::ApiKey { key_id } = context.request().actor() {
                self.layer.key_uses.record(tenant_id, *key_id);
            }
            self.layer.activity.record(tenant_id);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::ServiceExt;
    use uuid::Uuid;

    use super::*;
    use crate::api::gateway::testing;
    use crate::tenancy::RequestContext;

    #[tokio::test]
    async fn admitted_requests_count_for_their_tenant_and_api_key_requests_note_the_key() {
        let (_, redis, _) = testing::unreachable_dependencies();
        let key_uses = Arc::new(KeyUseRecorder::default());
        let activity = Arc::new(UsageCounter::new(redis));
        let layer = UsageLayer::new(key_uses.clone(), activity.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let inner = tower::service_fn(move |_: http::Request<()>| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, Infallible>(()) }
        });
        let (keyed, platform, key_id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let with_context = |context: Option<TenantContext>| {
            let mut request = http::Request::new(());
            if let Some(context) = context {
                request.extensions_mut().insert(context);
            }
            request
        };
        let by_key = || RequestContext::new(Actor::ApiKey { key_id }, "r".to_owned());
        let by_platform = || RequestContext::new(Actor::Bootstrap, "r".to_owned());
        for request in [
            with_context(Some(TenantContext::new(keyed, by_key()))),
            with_context(Some(TenantContext::new(keyed, by_key()))),
            with_context(Some(TenantContext::new(platform, by_platform()))),
            with_context(None),
        ] {
            layer.layer(inner.clone()).oneshot(request).await.expect("infallible");
        }

        assert_eq!(calls.load(Ordering::Relaxed), 4, "every request reaches the service, counted or not");
        assert_eq!(activity.pending_requests(keyed), 2);
        assert_eq!(activity.pending_requests(platform), 1);
        assert_eq!(
            key_uses.pending_uses(),
            vec![(keyed, key_id)],
            "the key's use is noted; a platform call notes none"
        );
        assert_eq!(activity.pending_requests(Uuid::now_v7()), 0, "control: counts are per tenant");
    }
}
