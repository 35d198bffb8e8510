//! The tower layer in front of each service: authenticates the caller and, for the data
//! plane, resolves the tenant and hands the handler a [`TenantContext`] in the request
//! extensions. It is applied per service (never server-wide), so health and reflection
//! answer with no metadata at all, as Kubernetes probes send none.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::server::NamedService;
use tower::{Layer, Service};

use super::TenantContext;
use super::resolver::TenantResolver;
use super::selector;
use crate::auth::PlatformAuth;
use crate::error::Result;

/// What the layer checks.
#[derive(Clone)]
enum Plane {
    /// Authentication only.
    Control,
    /// Authentication, then tenant resolution.
    Data(Arc<TenantResolver>),
}

/// Builds [`Gateway`] services.
#[derive(Clone)]
pub struct GatewayLayer {
    auth: PlatformAuth,
    plane: Plane,
}

impl GatewayLayer {
    /// For control-plane services: authentication only.
    pub fn control_plane(auth: PlatformAuth) -> Self {
        Self { auth, plane: Plane::Control }
    }

    /// For data-plane services: authentication and tenant resolution.
    pub fn data_plane(auth: PlatformAuth, resolver: Arc<TenantResolver>) -> Self {
        Self { auth, plane: Plane::Data(resolver) }
    }

    async fn admit(&self, headers: &http::HeaderMap) -> Result<Option<TenantContext>> {
        self.auth.authenticate(headers)?;
        let Plane::Data(resolver) = &self.plane else {
            return Ok(None);
        };
        let selector = selector::parse(headers)?;
        let context = resolver.resolve(&selector).await?;
        tracing::Span::current().record("tenant.id", tracing::field::display(context.tenant_id()));
        Ok(Some(context))
    }
}

impl<S> Layer<S> for GatewayLayer {
    type Service = Gateway<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gateway { layer: self.clone(), inner }
    }
}

/// A service behind the [`GatewayLayer`].
#[derive(Clone)]
pub struct Gateway<S> {
    layer: GatewayLayer,
    inner: S,
}

impl<S: NamedService> NamedService for Gateway<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Gateway<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; swap so the instance that was polled ready is called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let response = match layer.admit(request.headers()).await {
                Ok(context) => {
                    if let Some(context) = context {
                        request.extensions_mut().insert(context);
                    }
                    inner.call(request).await?
                }
                Err(error) => tonic::Status::from(error).into_http(),
            };
            // One line per RPC. A unary error's status is in the headers; success is in
            // the trailers, which are not sent yet, so no header means OK.
            let code = response.headers().get("grpc-status").and_then(|value| value.to_str().ok()).unwrap_or("0");
            tracing::info!(grpc.code = code, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "rpc finished");
            Ok(response)
        })
    }
}
