//! OpenTelemetry traces, received by a real OTLP/gRPC `TraceService` started in the test on
//! port 0: the server's spans for an RPC that arrives with a W3C `traceparent`, their
//! attributes and children, the flush on shutdown, and the trace id in the log line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tenantd::config::{RootSampler, TraceSampler, TracesConfig};
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::user_service_client::UserServiceClient;
use tenantd::proto::{ListTenantsRequest, ListUsersRequest};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{ApiKeyScope, Metadata, spawn_app_with, unique_slug};
use crate::logs::{LoggedServer, span_field, with_message};
use crate::throwaway::ThrowawayRedis;

/// A span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Received {
    service_name: String,
    span: Span,
}

/// An OTLP/gRPC receiver on a free loopback port, keeping every span it is sent.
struct Receiver {
    endpoint: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: CancellationToken,
}

/// The receiver's `TraceService`.
#[derive(Clone)]
struct Collector(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = self.0.lock().expect("received");
        for resource_spans in request.into_inner().resource_spans {
            let attributes = resource_spans.resource.map(|resource| resource.attributes).unwrap_or_default();
            let service_name = string_attribute(&attributes, "service.name").unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                received.push(Received { service_name: service_name.clone(), span });
            }
        }
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let server = Server::builder()
            .add_service(TraceServiceServer::new(Collector(received.clone())))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop.clone().cancelled_owned());
        tokio::spawn(server);
        Self { endpoint, received, stop }
    }

    /// The spans received so far in the trace `trace_id` (32 hex digits).
    fn trace(&self, trace_id: &str) -> Vec<Received> {
        let received = self.received.lock().expect("received");
        received.iter().filter(|received| hex(&received.span.trace_id) == trace_id).cloned().collect()
    }

    /// Waits until the trace has a server span, and returns the trace.
    async fn wait_for_server_span(&self, trace_id: &str) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let trace = self.trace(trace_id);
            if trace.iter().any(|received| is_server(&received.span)) {
                return trace;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "no server span in trace {trace_id}: {trace:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|attribute| attribute.key == key).and_then(|attribute| {
        match attribute.value.as_ref()?.value.as_ref()? {
            Value::StringValue(value) => Some(value.clone()),
            Value::IntValue(value) => Some(value.to_string()),
            _ => None,
        }
    })
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    string_attribute(&span.attributes, key)
}

fn is_server(span: &Span) -> bool {
    span.kind == SpanKind::Server as i32
}

/// A caller's trace: a fresh trace id and parent span id, and the `traceparent` naming them.
struct CallerTrace {
    trace_id: String,
    parent_span_id: String,
}

impl CallerTrace {
    fn new() -> Self {
        let trace_id = uuid::Uuid::new_v4().simple().to_string();
        let parent_span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        Self { trace_id, parent_span_id }
    }

    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.parent_span_id)
    }
}

/// Traces to `endpoint`, every trace recorded, with the caller's decision first.
fn traces_to(endpoint: &str) -> TracesConfig {
    TracesConfig {
        endpoint: endpoint.to_owned(),
        export_timeout: Duration::from_secs(5),
        service_name: "tenantd-under-test".into(),
        resource_attributes: vec![("deployment.environment".into(), "test".into())],
        sampler: TraceSampler { root: RootSampler::AlwaysOn, follow_parent: true },
    }
}

#[tokio::test]
async fn an_rpc_is_one_server_span_in_the_callers_trace_with_its_transaction_and_redis_calls_as_children() {
    let receiver = Receiver::start().await;
    let redis = ThrowawayRedis::start();
    let app = spawn_app_with(|config| {
        config.redis.url = redis.url().into();
        config.traces = Some(traces_to(&receiver.endpoint));
    })
    .await;
    app.wait_for_status("redis", ServingStatus::Serving).await;
    redis.wait_for_subscribers(1, Duration::from_secs(10)).await;
    let tenant = app.create_tenant(&unique_slug("traced")).await;
    let (_, key) = app.create_api_key(&tenant.id, &[ApiKeyScope::Read]).await;

    // A fresh key: the resolver asks Redis for it, then PostgreSQL; the list is a tenant read.
    let caller = CallerTrace::new();
    let metadata = Metadata::bearer(&key)
        .with("traceparent", &caller.traceparent())
        .with("tracestate", "caller=1")
        .with("x-request-id", "traced-list-1");
    let mut users = UserServiceClient::with_interceptor(app.channel.clone(), metadata);
    users.list_users(ListUsersRequest::default()).await.expect("list users");
    // Control: a call without a traceparent starts a trace of its own.
    app.users(&tenant.id).list_users(ListUsersRequest::default()).await.expect("untraced list");

    // The batch would be exported up to 5 s later; stopping the server flushes it now.
    app.stop().await;
    let trace = receiver.trace(&caller.trace_id);

    let servers: Vec<_> = trace.iter().filter(|received| is_server(&received.span)).collect();
    assert_eq!(servers.len(), 1, "one server span for the RPC: {trace:#?}");
    let server = &servers[0].span;
    assert_eq!(server.name, "tenantd.v1.UserService/ListUsers");
    assert_eq!(hex(&server.parent_span_id), caller.parent_span_id, "the caller's span is the parent");
    assert_eq!(server.trace_state, "caller=1");
    assert_eq!(attribute(server, "tenant.id").as_deref(), Some(tenant.id.as_str()));
    assert_eq!(attribute(server, "request.id").as_deref(), Some("traced-list-1"));
    assert_eq!(attribute(server, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(servers[0].service_name, "tenantd-under-test");

    let children: Vec<_> =
        trace.iter().map(|received| &received.span).filter(|span| span.parent_span_id == server.span_id).collect();
    let database: Vec<_> =
        children.iter().filter(|span| attribute(span, "db.system.name").as_deref() == Some("postgresql")).collect();
    let tenant_scoped: Vec<_> =
        database.iter().filter(|span| attribute(span, "tenant.id").as_deref() == Some(tenant.id.as_str())).collect();
    assert!(
        tenant_scoped.iter().any(|span| span.name == "tenant read"),
        "the tenant transaction is a child: {children:#?}"
    );
    let redis_calls: Vec<_> =
        children.iter().filter(|span| attribute(span, "db.system.name").as_deref() == Some("redis")).collect();
    assert!(
        redis_calls.iter().any(|span| attribute(span, "db.operation.name").as_deref() == Some("GET")),
        "a Redis call is a child: {children:#?}"
    );
    assert!(children.iter().all(|span| span.kind == SpanKind::Client as i32), "{children:#?}");
    // Control: every span of the trace is the server span or one of its children.
    assert_eq!(trace.len(), 1 + children.len(), "{trace:#?}");

    // The untraced call is a root span of another trace, with the tenant id too.
    let received = receiver.received.lock().expect("received").clone();
    let roots: Vec<_> = received
        .iter()
        .map(|received| &received.span)
        .filter(|span| is_server(span) && span.parent_span_id.is_empty())
        .filter(|span| span.name == "tenantd.v1.UserService/ListUsers")
        .collect();
    assert_eq!(roots.len(), 1, "{received:#?}");
    assert_ne!(hex(&roots[0].trace_id), caller.trace_id);
    assert_eq!(attribute(roots[0], "tenant.id").as_deref(), Some(tenant.id.as_str()));
}

/// Calls `ListTenants` on `server` with a `traceparent` of `caller` and `x-request-id:
/// <request_id>`, and returns the call's `rpc finished` line.
async fn list_tenants_traced(server: &LoggedServer, caller: &CallerTrace, request_id: &str) -> serde_json::Value {
    let metadata = Metadata::platform().with("traceparent", &caller.traceparent()).with("x-request-id", request_id);
    let mut tenants = TenantServiceClient::with_interceptor(server.channel.clone(), metadata);
    tenants.list_tenants(ListTenantsRequest::default()).await.expect("list tenants");
    let lines = server.request_lines(request_id).await;
    let finished = with_message(&lines, "rpc finished");
    assert_eq!(finished.len(), 1, "{lines:#?}");
    finished[0].clone()
}

#[tokio::test]
async fn the_binary_reads_the_otel_variables_and_its_rpc_log_line_carries_the_trace_id() {
    let receiver = Receiver::start().await;
    let server = LoggedServer::start_with(&[
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &receiver.endpoint),
        ("OTEL_SERVICE_NAME", "tenantd-binary"),
        // Read by the SDK itself: export within 100 ms rather than 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let caller = CallerTrace::new();
    let finished = list_tenants_traced(&server, &caller, "traced-binary-1").await;
    assert_eq!(span_field(&finished, "trace.id"), Some(caller.trace_id.as_str()), "{finished:#?}");

    let trace = receiver.wait_for_server_span(&caller.trace_id).await;
    let server_span = trace.iter().find(|received| is_server(&received.span)).expect("server span");
    assert_eq!(server_span.service_name, "tenantd-binary");
    assert_eq!(server_span.span.name, "tenantd.v1.TenantService/ListTenants");
    assert_eq!(attribute(&server_span.span, "request.id").as_deref(), Some("traced-binary-1"));
    server.stop().await;

    // Control: without OTEL_TRACES_EXPORTER the same call logs no trace id, and exports nothing.
    let untraced = LoggedServer::start().await;
    let caller = CallerTrace::new();
    let finished = list_tenants_traced(&untraced, &caller, "untraced-binary-1").await;
    assert_eq!(span_field(&finished, "trace.id"), None, "{finished:#?}");
    untraced.stop().await;
    assert!(receiver.trace(&caller.trace_id).is_empty());
}
