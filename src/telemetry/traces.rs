//! OpenTelemetry traces over OTLP/gRPC, off unless [`Config::traces`](crate::config::Config)
//! is set (`OTEL_TRACES_EXPORTER=otlp`).
//!
//! The [`Application`](crate::startup::Application) owns its [`Traces`]: a tracer provider
//! that batches spans and exports them on a thread of its own, built from the settings and
//! shut down (flushing what is pending) when the server stops. Nothing is process-global, so
//! a process may run servers with and without traces side by side (the tests do).
//!
//! Per RPC of a tenantd service (health and reflection are not traced), the gateway's
//! outermost layer starts a server span, child of the caller's W3C trace context
//! (`traceparent`/`tracestate` metadata), and polls the request inside an OpenTelemetry
//! [`Context`] that holds that span and the tracer. What runs for the request starts child
//! spans from that context ([`child_span`]: the tenant transaction, each Redis command) and
//! adds attributes to the server span ([`set_rpc_attribute`]: `tenant.id`, `request.id`).
//!
//! With traces off no context is attached: [`child_span`] and [`set_rpc_attribute`] read one
//! relaxed atomic (how many providers are running in the process) and return.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::{RootSampler, TraceSampler, TracesConfig};

/// How many tracer providers run in this process; while none does, nothing on the request
/// path looks for a trace context.
static RUNNING_PROVIDERS: AtomicUsize = AtomicUsize::new(0);

/// A running tracer provider: spans are batched and exported over OTLP/gRPC until
/// [`Traces::shutdown`].
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: RpcTracer,
    _running: Running,
}

/// Counts a provider in [`RUNNING_PROVIDERS`] while it lives (a server whose build failed
/// drops its provider without [`Traces::shutdown`]).
struct Running;

impl Running {
    fn start() -> Self {
        RUNNING_PROVIDERS.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING_PROVIDERS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Traces {
    /// Builds the exporter and the provider. Connects lazily: a collector that is down costs
    /// dropped spans (and a warning from the exporter), never a failed request.
    pub fn start(config: &TracesConfig) -> anyhow::Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.export_timeout)
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .build()
            .with_context(|| format!("OTLP traces endpoint {}", config.endpoint))?;
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes(
                config.resource_attributes.iter().map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
            )
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler(config.sampler))
            .with_resource(resource)
            .build();
        let tracer =
            RpcTracer { tracer: provider.tracer("tenantd"), propagator: Arc::new(TraceContextPropagator::new()) };
        Ok(Self { provider, tracer, _running: Running::start() })
    }

    /// The tracer of RPC spans, for the gateway.
    pub fn tracer(&self) -> RpcTracer {
        self.tracer.clone()
    }

    /// Exports every pending span (waiting at most the export timeout per batch) and stops.
    pub async fn shutdown(self) {
        // Blocking: the batch thread exports through a tonic channel driven by this runtime,
        // so the wait must not hold a runtime thread.
        let Self { provider, .. } = self;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => tracing::info!("traces flushed"),
            Ok(Err(error)) => tracing::warn!(error = %error, "traces: shutdown did not flush every span"),
            Err(error) => tracing::warn!(error = %error, "traces: shutdown task failed"),
        }
    }
}

/// The sampler named by the settings.
fn sampler(settings: TraceSampler) -> Sampler {
    let root = match settings.root {
        RootSampler::AlwaysOn => Sampler::AlwaysOn,
        RootSampler::AlwaysOff => Sampler::AlwaysOff,
        RootSampler::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    if settings.follow_parent { Sampler::ParentBased(Box::new(root)) } else { root }
}

/// Starts the server span of each RPC.
#[derive(Clone)]
pub struct RpcTracer {
    tracer: SdkTracer,
    propagator: Arc<TraceContextPropagator>,
}

/// The tracer, kept in an RPC's [`Context`] so that its child spans find it.
struct RequestTracer(SdkTracer);

impl RpcTracer {
    /// Starts the server span of the RPC at `path` (`/package.Service/Method`), child of the
    /// trace context the caller sent in `headers`, if any. The span ends with
    /// [`RpcTrace::finish`] (or when the trace is dropped).
    pub fn start(&self, path: &str, headers: &http::HeaderMap) -> RpcTrace {
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let name = path.trim_start_matches('/');
        let (service, method) = name.split_once('/').unwrap_or((name, ""));
        let span = self
            .tracer
            .span_builder(name.to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        RpcTrace { context: parent.with_span(span).with_value(RequestTracer(self.tracer.clone())) }
    }
}

/// The trace of one RPC: a [`Context`] holding its server span.
pub struct RpcTrace {
    context: Context,
}

impl RpcTrace {
    /// The context to poll the request in (see [`opentelemetry::context::FutureExt`]).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The trace id, as 32 hex digits (the `trace-id` of `traceparent`).
    pub fn trace_id(&self) -> String {
        self.context.span().span_context().trace_id().to_string()
    }

    /// Ends the server span with the RPC's gRPC status code.
    pub fn finish(self, code: &str) {
        let span = self.context.span();
        let numeric = code.parse::<i64>().unwrap_or(2);
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", numeric));
        if server_error(numeric) {
            span.set_status(Status::error(format!("gRPC status {numeric}")));
        }
        span.end();
    }
}

/// The gRPC codes that mark a server span as failed, as the semantic conventions list them:
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. A client's
/// mistake (INVALID_ARGUMENT, NOT_FOUND, ...) is not a server error.
fn server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Reads `traceparent` and `tracestate` from request headers (gRPC metadata).
struct HeaderExtractor<'h>(&'h http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A child span of the current RPC's span, ended when dropped; empty when the RPC is not
/// traced (traces off, or work outside a request such as the health probe).
pub struct ChildSpan(Option<opentelemetry_sdk::trace::Span>);

impl ChildSpan {
    /// Ends the span, marked failed if `outcome` is an error; returns `outcome`.
    pub fn end_with<T, E>(self, outcome: Result<T, E>) -> Result<T, E> {
        if let (Some(mut span), true) = (self.0, outcome.is_err()) {
            opentelemetry::trace::Span::set_status(&mut span, Status::error("failed"));
        }
        outcome
    }
}

/// Starts a client span named `name`, child of the current RPC's span, with the attributes
/// `attributes` makes (called only when the RPC is traced).
pub fn child_span(name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) -> ChildSpan {
    if RUNNING_PROVIDERS.load(Ordering::Relaxed) == 0 {
        return ChildSpan(None);
    }
    ChildSpan(Context::map_current(|context| {
        let RequestTracer(tracer) = context.get::<RequestTracer>()?;
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes())
            .start_with_context(tracer, context);
        Some(span)
    }))
}

/// Sets an attribute of the current RPC's server span, if the RPC is traced.
pub fn set_rpc_attribute(key: &'static str, value: impl FnOnce() -> String) {
    if RUNNING_PROVIDERS.load(Ordering::Relaxed) == 0 {
        return;
    }
    Context::map_current(|context| {
        if context.get::<RequestTracer>().is_some() {
            context.span().set_attribute(KeyValue::new(key, value()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_follows_the_parent_only_when_asked() {
        let ratio = TraceSampler { root: RootSampler::TraceIdRatio(0.25), follow_parent: false };
        assert!(matches!(sampler(ratio), Sampler::TraceIdRatioBased(r) if r == 0.25));
        let parent_based = TraceSampler { root: RootSampler::AlwaysOff, follow_parent: true };
        assert!(matches!(sampler(parent_based), Sampler::ParentBased(_)));
    }

    #[test]
    fn only_server_faults_mark_a_span_failed() {
        for code in [2, 4, 12, 13, 14, 15] {
            assert!(server_error(code), "{code}");
        }
        // Control: OK and the client's mistakes are not failures of the server.
        for code in [0, 1, 3, 5, 6, 7, 9, 10, 16] {
            assert!(!server_error(code), "{code}");
        }
    }

    #[test]
    fn without_a_running_provider_nothing_is_started() {
        // No Traces in this test: the context is never read.
        let span = child_span("x", || panic!("attributes are made only for a traced RPC"));
        assert!(span.0.is_none());
    }
}
