//! The tower layer in front of each service. It authenticates the caller and, for the data
//! plane, resolves the tenant and hands the handler a [`TenantContext`] in the request
//! extensions (control-plane handlers get a [`RequestContext`]). It is applied per service,
//! never server-wide, so health and reflection answer with no metadata at all, as
//! Kubernetes probes send none.
//!
//! Everything that can be checked without I/O is checked first: the credential's form (and
//! an API key's checksum), the tenant metadata, the request id.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::server::NamedService;
use tower::{Layer, Service};
use uuid::Uuid;

use super::resolver::TenantResolver;
use super::selector::{self, TenantSelector};
use super::{Actor, RequestContext, Scope, TenantContext};
use crate::auth::api_key::ApiKeyToken;
use crate::auth::{Credential, PlatformAuth, credential};
use crate::domain::api_keys;
use crate::domain::key_uses::KeyUseRecorder;
use crate::domain::usage::UsageCounter;
use crate::error::{Error, Reason, Result};
use crate::metrics::Metrics;

/// Metadata key of the caller's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the layer checks.
#[derive(Clone)]
enum Plane {
    /// Platform callers only.
    Control,
    /// Tenant resolution; platform callers or tenant API keys.
    Data { resolver: Arc<TenantResolver>, key_uses: Arc<KeyUseRecorder>, activity: Arc<UsageCounter> },
}

/// Builds [`Gateway`] services.
#[derive(Clone)]
pub struct GatewayLayer {
    auth: PlatformAuth,
    plane: Plane,
    metrics: Arc<Metrics>,
}

impl GatewayLayer {
    /// For control-plane services: platform callers only.
    pub fn control_plane(auth: PlatformAuth, metrics: Arc<Metrics>) -> Self {
        Self { auth, plane: Plane::Control, metrics }
    }

    /// For data-plane services: tenant resolution, and platform or API-key callers; key
    /// uses and tenant activity are counted in memory.
    pub fn data_plane(
        auth: PlatformAuth,
        resolver: Arc<TenantResolver>,
        key_uses: Arc<KeyUseRecorder>,
        activity: Arc<UsageCounter>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { auth, plane: Plane::Data { resolver, key_uses, activity }, metrics }
    }

    async fn admit<B>(&self, request: &mut http::Request<B>) -> Result<()> {
        let headers = request.headers();
        let request_id = request_id(headers)?;
        tracing::Span::current().record("request.id", request_id.as_str());
        let credential = credential(headers, &self.auth)?;
        let Plane::Data { resolver, key_uses, activity } = &self.plane else {
            if matches!(credential, Credential::ApiKey(_)) {
                return Err(Error::new(Reason::ApiKeyNotAllowed));
            }
            request.extensions_mut().insert(RequestContext::new(Actor::Platform, request_id));
            return Ok(());
        };
        let context = match credential {
            Credential::Platform => {
                let selector = selector::parse(headers)?;
                resolver.resolve(&selector, RequestContext::new(Actor::Platform, request_id)).await?
            }
            Credential::ApiKey(token) => {
                let selector = selector::parse_optional(headers)?;
                let required = required_scope(request.uri().path());
                let context = admit_api_key(resolver, &token, selector, required, request_id).await?;
                key_uses.record(token.tenant_id(), token.key_id());
                context
            }
        };
        tracing::Span::current().record("tenant.id", tracing::field::display(context.tenant_id()));
        activity.record(context.tenant_id());
        request.extensions_mut().insert(context);
        Ok(())
    }
}

/// Authenticates a data-plane call made with a tenant API key.
async fn admit_api_key(
    resolver: &TenantResolver,
    token: &ApiKeyToken,
    selector: Option<TenantSelector>,
    required: Scope,
    request_id: String,
) -> Result<TenantContext> {
    let mismatch = || Error::new(Reason::TenantMismatch);
    // A tenant named in metadata must be the key's: by id, with no I/O.
    if let Some(TenantSelector::Id(named)) = &selector
        && *named != token.tenant_id()
    {
        return Err(mismatch());
    }
    let scopes = api_keys::authenticate(token, resolver.api_key(token).await?)?;
    if let Some(selector @ TenantSelector::Slug(_)) = &selector
        && resolver.tenant_id(selector).await? != Some(token.tenant_id())
    {
        return Err(mismatch());
    }
    if !scopes.contains(&required) {
        return Err(Error::new(Reason::ApiKeyScopeInsufficient));
    }
    resolver.require_active(token.tenant_id()).await?;
    Ok(TenantContext::new(token.tenant_id(), RequestContext::new(Actor::ApiKey { key_id: token.key_id() }, request_id)))
}

/// The scope a data-plane method needs: Get, List and Ping read; everything else writes
/// (so a method added later is a write until shown otherwise).
fn required_scope(path: &str) -> Scope {
    let method = path.rsplit('/').next().unwrap_or_default();
    if method.starts_with("Get") || method.starts_with("List") || method == "Ping" { Scope::Read } else { Scope::Write }
}

/// The caller's `x-request-id` (1 to 128 of `[A-Za-z0-9._:-]`), or a new UUIDv7.
fn request_id(headers: &http::HeaderMap) -> Result<String> {
    let mut values = headers.get_all(REQUEST_ID_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(Uuid::now_v7().to_string());
    };
    let invalid = || {
        Error::invalid(Reason::RequestIdMalformed, REQUEST_ID_HEADER, "must be 1 to 128 of [A-Za-z0-9._:-], sent once")
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let bytes = value.as_bytes();
    let valid = (1..=128).contains(&bytes.len())
        && bytes.iter().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'));
    if !valid {
        return Err(invalid());
    }
    value.to_str().map(str::to_owned).map_err(|_| invalid())
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
            let path = request.uri().path().to_owned();
            let response = match layer.admit(&mut request).await {
                Ok(()) => inner.call(request).await?,
                Err(error) => tonic::Status::from(error).into_http(),
            };
            // One line per RPC. A unary error's status is in the headers; success is in
            // the trailers, which are not sent yet, so no header means OK.
            let code = response.headers().get("grpc-status").and_then(|value| value.to_str().ok()).unwrap_or("0");
            let elapsed = started.elapsed();
            layer.metrics.observe_rpc(&path, code, elapsed);
            tracing::info!(grpc.code = code, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "rpc finished");
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_read_and_everything_else_needs_write() {
        assert_eq!(required_scope("/tenantd.v1.UserService/GetUser"), Scope::Read);
        assert_eq!(required_scope("/tenantd.v1.DocumentService/ListDocuments"), Scope::Read);
        assert_eq!(required_scope("/tenantd.v1.UserService/CreateUser"), Scope::Write);
        assert_eq!(required_scope("/tenantd.v1.UserService/SomethingNew"), Scope::Write);
        assert_eq!(required_scope("/tenantd.v1.DiagnosticsService/Ping"), Scope::Read);
        assert_eq!(required_scope("/tenantd.v1.DiagnosticsService/PingAndDelete"), Scope::Write);
    }
}
