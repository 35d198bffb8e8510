//! Request and tenant contexts. There is no global or task-local "current tenant": the
//! gateway puts these values in the request extensions, and code below a handler receives
//! them as arguments.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::Quotas;
use crate::db::tenant_schema::IsolationTier;
use crate::error::{Error, Result};

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Get and List calls.
    Read,
    /// Create, Update and Delete calls.
    Write,
}

impl Scope {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            _ => None,
        }
    }
}

/// What a platform call needs its operator's role to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Reads: Get, List, ResolveTenant; data-plane reads.
    Read,
    /// Tenant lifecycle (create, update, suspend, resume, delete) and data-plane writes.
    Lifecycle,
    /// Credential management: tenant API keys and operators.
    Credentials,
}

/// An operator's role: what its key may do on the platform's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorRole {
    /// Everything, credential management included.
    Admin,
    /// Tenant lifecycle and tenant data, but not credentials.
    Operator,
    /// Reads only.
    Viewer,
}

impl OperatorRole {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "admin" => Some(Self::Admin),
            "operator" => Some(Self::Operator),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    /// Whether the role allows calls that need `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        match self {
            Self::Admin => true,
            Self::Operator => permission != Permission::Credentials,
            Self::Viewer => permission == Permission::Read,
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// tenantd itself (cache fills, batched bookkeeping); never audited.
    System,
    /// A holder of the configured bootstrap platform token (every permission).
    Bootstrap,
    /// A named operator, by its operator key.
    Operator {
        /// The operator's id.
        operator_id: Uuid,
        /// Its role, already checked against the call.
        role: OperatorRole,
    },
    /// A tenant API key.
    ApiKey {
        /// The key's id.
        key_id: Uuid,
    },
}

impl Actor {
    /// `bootstrap`, `operator` or `api_key`, as recorded in audit events.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Bootstrap => "bootstrap",
            Self::Operator { .. } => "operator",
            Self::ApiKey { .. } => "api_key",
        }
    }

    /// The operator's or the key's id; empty for the bootstrap token.
    pub fn id(&self) -> String {
        match self {
            Self::System | Self::Bootstrap => String::new(),
            Self::Operator { operator_id, .. } => operator_id.to_string(),
            Self::ApiKey { key_id } => key_id.to_string(),
        }
    }
}

/// Who is calling, and the request's id (for audit and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    actor: Actor,
    request_id: String,
}

impl RequestContext {
    /// A context for `actor` and `request_id`.
    pub(crate) fn new(actor: Actor, request_id: String) -> Self {
        Self { actor, request_id }
    }

    /// The context of tenantd's own background work.
    pub(crate) fn system() -> Self {
        Self { actor: Actor::System, request_id: "system".to_owned() }
    }

    /// The caller.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Reads the context the gateway put into a request's extensions.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<Self> {
        request.extensions().get::<Self>().cloned().ok_or_else(missing_gateway)
    }
}

/// The tenant a request acts for, with the request's context. For the data plane the
/// gateway creates it after checking the tenant is ACTIVE; the control plane creates one
/// for the tenant an operation concerns.
///
/// It carries the tenant's isolation tier, from the cached tenant record, so that the tenant
/// transaction routes to a schema tenant's schema without a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    tenant_id: Uuid,
    tier: IsolationTier,
    request: RequestContext,
    plan: Option<String>,
    quotas: Quotas,
    counters_trusted_from: Option<DateTime<Utc>>,
}

impl TenantContext {
    /// A context for work on the shared tenant tables only (API keys, audit events,
    /// idempotency records, the registry): its transactions are not routed to a tenant
    /// schema. Work that reaches users, documents or settings needs [`TenantContext::routed`].
    /// A new context has no plan and no quotas: creates that count against a quota get the
    /// context from [`super::resolver::TenantResolver`], which adds them
    /// ([`TenantContext::with_plan`]). Only the gateway and the control plane create contexts.
    pub(crate) fn new(tenant_id: Uuid, request: RequestContext) -> Self {
        Self {
            tenant_id,
            tier: IsolationTier::Pooled,
            request,
            plan: None,
            quotas: Quotas::default(),
            counters_trusted_from: None,
        }
    }

    /// A context whose transactions are routed by the tenant's `tier` (from its record).
    pub(crate) fn routed(tenant_id: Uuid, tier: IsolationTier, request: RequestContext) -> Self {
        Self { tier, ..Self::new(tenant_id, request) }
    }

    /// The context with the tenant's plan and its effective quotas, as its cached record has
    /// them, and the earliest recount its quota counters may be trusted from (its limits'
    /// last change plus [`super::resolver::TenantResolver::recount_grace`]).
    pub(crate) fn with_plan(
        self,
        plan: Option<String>,
        quotas: Quotas,
        counters_trusted_from: Option<DateTime<Utc>>,
    ) -> Self {
        Self { plan, quotas, counters_trusted_from, ..self }
    }

    /// The earliest recount of a quota counter that may be trusted (`None`: unknown, always
    /// recount).
    pub fn counters_trusted_from(&self) -> Option<DateTime<Utc>> {
        self.counters_trusted_from
    }

    /// The tenant's plan's name, if it has one.
    pub fn plan(&self) -> Option<&str> {
        self.plan.as_deref()
    }

    /// The caps on the tenant's counted resources (its plan's, with its overrides).
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// The tenant's id.
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// Where the tenant's data lives, as its cached record said when the request was admitted.
    pub fn tier(&self) -> IsolationTier {
        self.tier
    }

    /// The request's context.
    pub fn request(&self) -> &RequestContext {
        &self.request
    }

    /// Reads the context the gateway put into a request's extensions.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<Self> {
        request.extensions().get::<Self>().cloned().ok_or_else(missing_gateway)
    }
}

fn missing_gateway() -> Error {
    Error::internal(anyhow::anyhow!("service called without the gateway layer"))
}

/// For a long-lived call (the event stream), checks again that the credential it was
/// admitted with still admits it: a key revoked or expired, a tenant suspended or deleted,
/// an operator revoked must end the call, not only refuse the next one. The gateway builds
/// it with the same checks as admission (through the resolver's caches, so a check costs no
/// query while nothing changed).
#[derive(Clone)]
pub struct Readmission(Arc<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>);

impl Readmission {
    /// A readmission that runs `check`.
    pub(crate) fn new<F>(check: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    {
        Self(Arc::new(check))
    }

    /// Whether the credential still admits the call; the error says why not.
    pub async fn check(&self) -> Result<()> {
        (self.0)().await
    }

    /// The readmission the gateway put into a request's extensions, if any (a credential
    /// that cannot change, the bootstrap token, has none).
    pub fn from_request<T>(request: &tonic::Request<T>) -> Option<Self> {
        request.extensions().get::<Self>().cloned()
    }
}

impl std::fmt::Debug for Readmission {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Readmission")
    }
}
