//! Authentication and tenant admission. The control plane admits platform callers (operator
//! keys within their role, and the bootstrap token) and hands handlers a [`RequestContext`];
//! the data plane admits platform callers and tenant API keys, resolves the tenant and hands
//! handlers a [`TenantContext`] (and the tenant's [`TenantRecord`], for the layers behind it),
//! in the request extensions. An operator acting for a
//! tenant is the actor of that tenant's audit events (the impersonation trail).
//!
//! Everything that can be checked without I/O is checked first: the request id, the
//! credential's form (and a key's checksum), the tenant metadata. Only then is the
//! resolver asked (the tenant, the key or operator record, the tenant's state).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::server::NamedService;
use tower::{Layer, Service};
use uuid::Uuid;

use crate::auth::api_key::ApiKeyToken;
use crate::auth::operator_key::OperatorKeyToken;
use crate::auth::{Credential, PlatformAuth, credential};
use crate::domain::{api_keys, operators};
use crate::error::{Error, Reason, Result};
use crate::telemetry;
use crate::tenancy::resolver::{TenantRecord, TenantResolver};
use crate::tenancy::selector::{self, TenantSelector};
use crate::tenancy::{Actor, Permission, Readmission, RequestContext, Scope, TenantContext};

/// Metadata key of the caller's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the layer checks.
#[derive(Clone, Copy)]
enum Plane {
    /// Platform callers only.
    Control,
    /// Tenant resolution; platform callers or tenant API keys.
    Data,
    /// The event stream: platform callers (no tenant metadata: the request names the
    /// tenants) or tenant API keys (their own tenant).
    Events,
}

/// Builds [`Admission`] services.
#[derive(Clone)]
pub struct AdmissionLayer {
    auth: PlatformAuth,
    resolver: Arc<TenantResolver>,
    plane: Plane,
}

impl AdmissionLayer {
    /// For control-plane services: platform callers only (operator keys, whose records
    /// `resolver` finds, and the bootstrap token), each call within the operator's role.
    pub fn control_plane(auth: PlatformAuth, resolver: Arc<TenantResolver>) -> Self {
        Self { auth, resolver, plane: Plane::Control }
    }

    /// For data-plane services: platform or API-key callers, for an ACTIVE tenant that
    /// `resolver` finds.
    pub fn data_plane(auth: PlatformAuth, resolver: Arc<TenantResolver>) -> Self {
        Self { auth, resolver, plane: Plane::Data }
    }

    /// For the event stream: platform callers get a [`RequestContext`] (the request names
    /// the tenants); tenant API keys are admitted as on the data plane, for their tenant.
    pub fn events(auth: PlatformAuth, resolver: Arc<TenantResolver>) -> Self {
        Self { auth, resolver, plane: Plane::Events }
    }

    async fn admit<B>(&self, request: &mut http::Request<B>) -> Result<()> {
        let headers = request.headers();
        let request_id = request_id(headers)?;
        telemetry::record_request_id(&request_id);
        let credential = credential(headers, &self.auth)?;
        let path = request.uri().path();
        let resolver = &self.resolver;
        let platform_without_tenant = match (self.plane, &credential) {
            (Plane::Data, _) | (Plane::Events, Credential::ApiKey(_)) => false,
            (Plane::Control | Plane::Events, _) => true,
        };
        if platform_without_tenant {
            let permission = control_permission(path);
            let actor = match &credential {
                Credential::ApiKey(_) => return Err(Error::new(Reason::ApiKeyNotAllowed)),
                Credential::Bootstrap => Actor::Bootstrap,
                Credential::Operator(token) => admit_operator(resolver, token, permission).await?,
            };
            if let (Plane::Events, Credential::Operator(token)) = (self.plane, credential) {
                let resolver = resolver.clone();
                request.extensions_mut().insert(Readmission::new(move || {
                    let (resolver, token) = (resolver.clone(), token.clone());
                    Box::pin(async move { admit_operator(&resolver, &token, permission).await.map(drop) })
                }));
            }
            request.extensions_mut().insert(RequestContext::new(actor, request_id));
            return Ok(());
        }
        let (context, record) = match credential {
            Credential::Bootstrap => {
                let selector = selector::parse(headers)?;
                resolver.resolve(&selector, RequestContext::new(Actor::Bootstrap, request_id)).await?
            }
            Credential::Operator(token) => {
                // Metadata first (no I/O), then the key: an operator acts for a tenant it names.
                let selector = selector::parse(headers)?;
                let actor = admit_operator(resolver, &token, data_permission(path)).await?;
                resolver.resolve(&selector, RequestContext::new(actor, request_id)).await?
            }
            Credential::ApiKey(token) => {
                let selector = selector::parse_optional(headers)?;
                let required = required_scope(path);
                let context = admit_api_key(resolver, &token, selector.clone(), required, request_id).await?;
                if let Plane::Events = self.plane {
                    let resolver = resolver.clone();
                    request.extensions_mut().insert(Readmission::new(move || {
                        let (resolver, token, selector) = (resolver.clone(), token.clone(), selector.clone());
                        Box::pin(async move {
                            admit_api_key(&resolver, &token, selector, required, String::new()).await.map(drop)
                        })
                    }));
                }
                context
            }
        };
        telemetry::record_tenant_id(context.tenant_id());
        request.extensions_mut().insert(context);
        request.extensions_mut().insert(record);
        Ok(())
    }
}

/// Authenticates a platform call made with an operator key and checks that the operator's
/// role allows `needed`: the actor every audit event of the call names.
async fn admit_operator(resolver: &TenantResolver, token: &OperatorKeyToken, needed: Permission) -> Result<Actor> {
    let role = operators::authenticate(token, resolver.operator(token).await?)?;
    if !role.allows(needed) {
        return Err(Error::new(Reason::OperatorRoleInsufficient));
    }
    Ok(Actor::Operator { operator_id: token.operator_id(), role })
}

/// What a control-plane method needs. Reads (Get, List, Watch, ResolveTenant, WaitOperation) are
/// for every role; the tenant lifecycle (moves and purges included) and cancelling or deleting an operation
/// are named one by one; everything else, API keys and operators
/// included, is credential management, so a method added later is admin-only until shown
/// otherwise.
fn control_permission(path: &str) -> Permission {
    const LIFECYCLE: [&str; 10] = [
        "CreateTenant",
        "UpdateTenant",
        "SuspendTenant",
        "ResumeTenant",
        "DeleteTenant",
        "MoveTenant",
        "PurgeTenant",
        // A tenant's whole data: for the roles that may change tenants, not for viewers.
        "ExportTenant",
        "ReadTenantArchive",
        "ImportTenant",
    ];
    const PLANS: [&str; 2] = ["CreatePlan", "UpdatePlan"];
    const OPERATIONS: [&str; 2] = ["CancelOperation", "DeleteOperation"];
    let method = path.rsplit('/').next().unwrap_or_default();
    let reads = ["Get", "List", "Watch"].iter().any(|prefix| method.starts_with(prefix));
    let operations = path.starts_with("/google.longrunning.Operations/");
    if reads || method == "ResolveTenant" || (operations && method == "WaitOperation") {
        Permission::Read
    } else if (LIFECYCLE.contains(&method) && path.starts_with("/tenantd.v1.TenantService/"))
        || (PLANS.contains(&method) && path.starts_with("/tenantd.v1.PlanService/"))
        || (operations && OPERATIONS.contains(&method))
    {
        Permission::Lifecycle
    } else {
        Permission::Credentials
    }
}

/// What a data-plane method needs of an operator acting for a tenant: reads are reads,
/// writes are tenant work (the lifecycle permission), like an API key's scopes.
fn data_permission(path: &str) -> Permission {
    match required_scope(path) {
        Scope::Read => Permission::Read,
        Scope::Write => Permission::Lifecycle,
    }
}

/// Authenticates a data-plane call made with a tenant API key.
async fn admit_api_key(
    resolver: &TenantResolver,
    token: &ApiKeyToken,
    selector: Option<TenantSelector>,
    required: Scope,
    request_id: String,
) -> Result<(TenantContext, TenantRecord)> {
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
    let record = resolver.require_active(token.tenant_id()).await?;
    let request = RequestContext::new(Actor::ApiKey { key_id: token.key_id() }, request_id);
    Ok((resolver.context_of(token.tenant_id(), &record, request), record))
}

/// The scope a data-plane method needs: Get, List, Watch and Ping read; everything else
/// writes (so a method added later is a write until shown otherwise).
fn required_scope(path: &str) -> Scope {
    let method = path.rsplit('/').next().unwrap_or_default();
    let reads = ["Get", "List", "Watch"].iter().any(|prefix| method.starts_with(prefix));
    if reads || method == "Ping" { Scope::Read } else { Scope::Write }
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

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission { layer: self.clone(), inner }
    }
}

/// A service behind the [`AdmissionLayer`]: reached only by admitted requests.
#[derive(Clone)]
pub struct Admission<S> {
    layer: AdmissionLayer,
    inner: S,
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Admission<S>
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; swap so the instance that was polled ready is called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            match layer.admit(&mut request).await {
                Ok(()) => inner.call(request).await,
                Err(error) => Ok(super::refusal::refuse(request, error.into()).await),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use tower::ServiceExt;

    use super::*;
    use crate::api::gateway::testing;
    use crate::config::SecretString;

    const TOKEN: &str = "unit-test-platform-token";

    /// A resolver whose PostgreSQL and Redis listen nowhere: a check that reaches it fails
    /// with UNAVAILABLE, so a refusal with any other reason was made without I/O.
    fn unreachable_resolver() -> Arc<TenantResolver> {
        testing::unreachable_dependencies().2
    }

    fn auth() -> PlatformAuth {
        PlatformAuth::new(Some(SecretString::from(TOKEN))).expect("a non-empty token")
    }

    /// The contexts admission put in a request's extensions.
    type Contexts = (Option<RequestContext>, Option<TenantContext>);

    /// Metadata of a request: (name, value) pairs.
    type Headers<'h> = Vec<(&'h str, &'h str)>;

    /// What reached the inner service.
    #[derive(Clone, Default)]
    struct Reached(Arc<Mutex<Vec<Contexts>>>);

    impl Reached {
        fn contexts(&self) -> Vec<Contexts> {
            self.0.lock().expect("lock").clone()
        }
    }

    /// Sends one request with `headers` through `layer` to an inner service that records
    /// what reached it; returns the gRPC code (`None`: OK) and ErrorInfo reason.
    async fn call(layer: &AdmissionLayer, headers: &[(&str, &str)], reached: &Reached) -> (tonic::Code, String) {
        let recorder = reached.clone();
        let inner = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
            let recorder = recorder.clone();
            async move {
                let extensions = request.extensions();
                let contexts =
                    (extensions.get::<RequestContext>().cloned(), extensions.get::<TenantContext>().cloned());
                recorder.0.lock().expect("lock").push(contexts);
                Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
            }
        });
        let mut request = http::Request::builder().uri("/tenantd.v1.UserService/ListUsers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = layer
            .layer(inner)
            .oneshot(request.body(tonic::body::Body::empty()).expect("request"))
            .await
            .expect("infallible");
        match tonic::Status::from_header_map(response.headers()) {
            None => (tonic::Code::Ok, String::new()),
            Some(status) => {
                use tonic_types::StatusExt;
                let reason = status.get_error_details().error_info().map(|info| info.reason.clone());
                (status.code(), reason.unwrap_or_default())
            }
        }
    }

    fn api_key(tenant_id: Uuid) -> String {
        ApiKeyToken::generate(tenant_id, Uuid::now_v7()).expect("randomness").encode()
    }

    #[tokio::test]
    async fn the_control_plane_admits_the_platform_token_with_its_request_id_and_nothing_else() {
        let layer = AdmissionLayer::control_plane(auth(), unreachable_resolver());
        let reached = Reached::default();
        let bearer = format!("Bearer {TOKEN}");
        let admitted = call(&layer, &[("authorization", &bearer), (REQUEST_ID_HEADER, "req-1")], &reached).await;
        assert_eq!(admitted, (tonic::Code::Ok, String::new()));
        let contexts = reached.contexts();
        assert_eq!(contexts.len(), 1);
        let (request, tenant) = &contexts[0];
        assert_eq!(request.as_ref().map(RequestContext::request_id), Some("req-1"));
        assert_eq!(request.as_ref().map(RequestContext::actor), Some(&Actor::Bootstrap));
        assert!(tenant.is_none(), "the control plane names no tenant");

        let key = format!("Bearer {}", api_key(Uuid::now_v7()));
        let refused = [
            (vec![], tonic::Code::Unauthenticated, "CREDENTIALS_MISSING"),
            (vec![("authorization", "Bearer nope")], tonic::Code::Unauthenticated, "CREDENTIALS_INVALID"),
            (vec![("authorization", key.as_str())], tonic::Code::PermissionDenied, "API_KEY_NOT_ALLOWED"),
        ];
        for (headers, code, reason) in refused {
            assert_eq!(call(&layer, &headers, &reached).await, (code, reason.to_owned()), "{headers:?}");
        }
        assert_eq!(reached.contexts().len(), 1, "no refused request reached the service");
    }

    #[tokio::test]
    async fn the_data_plane_refuses_malformed_credentials_metadata_and_keys_without_io() {
        let layer = AdmissionLayer::data_plane(auth(), unreachable_resolver());
        let reached = Reached::default();
        let bearer = format!("Bearer {TOKEN}");
        let tenant = Uuid::now_v7();
        let good_key = api_key(tenant);
        let mut bad_checksum = good_key.clone().into_bytes();
        let last = bad_checksum.len() - 1;
        bad_checksum[last] = if bad_checksum[last] == b'0' { b'1' } else { b'0' };
        let bad_checksum = format!("Bearer {}", String::from_utf8(bad_checksum).expect("ascii"));
        let other_tenant = Uuid::now_v7().to_string();
        let good_key = format!("Bearer {good_key}");
        let cases: Vec<(Headers<'_>, tonic::Code, &str)> = vec![
            (vec![("x-tenant-id", &other_tenant)], tonic::Code::Unauthenticated, "CREDENTIALS_MISSING"),
            (vec![("authorization", "Basic abc")], tonic::Code::Unauthenticated, "CREDENTIALS_MALFORMED"),
            (vec![("authorization", "Bearer tdk_short")], tonic::Code::Unauthenticated, "API_KEY_MALFORMED"),
            (vec![("authorization", &bad_checksum)], tonic::Code::Unauthenticated, "API_KEY_CHECKSUM_MISMATCH"),
            (vec![("authorization", &bearer)], tonic::Code::InvalidArgument, "TENANT_REQUIRED"),
            (
                vec![("authorization", &bearer), ("x-tenant-id", "not-a-uuid")],
                tonic::Code::InvalidArgument,
                "TENANT_ID_MALFORMED",
            ),
            (
                vec![("authorization", &bearer), ("x-tenant-id", &other_tenant), (REQUEST_ID_HEADER, "no spaces")],
                tonic::Code::InvalidArgument,
                "REQUEST_ID_MALFORMED",
            ),
            (
                vec![("authorization", &good_key), ("x-tenant-id", &other_tenant)],
                tonic::Code::PermissionDenied,
                "TENANT_MISMATCH",
            ),
        ];
        for (headers, code, reason) in cases {
            assert_eq!(call(&layer, &headers, &reached).await, (code, reason.to_owned()), "{headers:?}");
        }
        assert!(reached.contexts().is_empty(), "no refused request reached the service");

        // Control: well-formed metadata gets past every I/O-free check to the resolver,
        // which is unreachable here, so the same requests fail UNAVAILABLE.
        let tenant = tenant.to_string();
        for headers in
            [vec![("authorization", bearer.as_str()), ("x-tenant-id", &tenant)], vec![("authorization", &good_key)]]
        {
            let (code, _) = call(&layer, &headers, &reached).await;
            assert_eq!(code, tonic::Code::Unavailable, "{headers:?}");
        }
        assert!(reached.contexts().is_empty(), "an unresolved tenant is never admitted");
    }

    #[test]
    fn control_plane_reads_are_for_everyone_the_lifecycle_for_operators_and_the_rest_for_admins() {
        let permission = |method: &str| control_permission(&format!("/tenantd.v1.TenantService/{method}"));
        for method in ["GetTenant", "ListTenants", "ResolveTenant", "ListApiKeys", "GetTenantUsage"] {
            assert_eq!(permission(method), Permission::Read, "{method}");
        }
        for method in ["CreateTenant", "UpdateTenant", "SuspendTenant", "ResumeTenant", "DeleteTenant"] {
            assert_eq!(permission(method), Permission::Lifecycle, "{method}");
        }
        for method in ["CreateApiKey", "RevokeApiKey", "SomethingNew"] {
            assert_eq!(permission(method), Permission::Credentials, "{method}");
        }
        // A tenant's whole data: not for viewers, though reading an archive is a read.
        for method in ["ExportTenant", "ReadTenantArchive", "ImportTenant"] {
            assert_eq!(permission(method), Permission::Lifecycle, "{method}");
        }
        assert_eq!(control_permission("/tenantd.v1.OperatorService/CreateOperator"), Permission::Credentials);
        assert_eq!(control_permission("/tenantd.v1.OperatorService/RevokeOperator"), Permission::Credentials);
        assert_eq!(control_permission("/tenantd.v1.OperatorService/ListOperators"), Permission::Read);
        assert_eq!(control_permission("/tenantd.v1.PlanService/CreatePlan"), Permission::Lifecycle);
        assert_eq!(control_permission("/tenantd.v1.PlanService/UpdatePlan"), Permission::Lifecycle);
        assert_eq!(control_permission("/tenantd.v1.PlanService/ListPlans"), Permission::Read);
        assert_eq!(control_permission("/tenantd.v1.OperatorService/UpdatePlan"), Permission::Credentials);
        assert_eq!(data_permission("/tenantd.v1.UserService/CreateUser"), Permission::Lifecycle);
        assert_eq!(data_permission("/tenantd.v1.UserService/GetUser"), Permission::Read);
    }

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
