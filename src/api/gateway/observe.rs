//! RPC metrics and the per-RPC log line: every request through the layer, admitted or
//! refused, is counted by service, method and gRPC code, its latency observed, and one
//! `info` line logged when its response is ready (inside the RPC's span, so the line
//! carries `rpc.method`, `request.id` and `tenant.id`). With traces on, it also starts the
//! RPC's OpenTelemetry server span (child of the caller's `traceparent`), polls the request
//! inside its context, records `trace.id` into the RPC's span and ends the span with the code.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::{BoxFuture, Either};
use opentelemetry::context::FutureExt as _;
use tonic::server::NamedService;
use tower::{Layer, Service};

use crate::metrics::Metrics;
use crate::telemetry::{self, traces::RpcTracer};

/// Builds [`Observe`] services.
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    tracer: Option<RpcTracer>,
}

impl ObserveLayer {
    /// Observes RPCs into `metrics`, and traces them with `tracer` (`None`: traces off).
    pub fn new(metrics: Arc<Metrics>, tracer: Option<RpcTracer>) -> Self {
        Self { metrics, tracer }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { metrics: self.metrics.clone(), tracer: self.tracer.clone(), inner }
    }
}

/// A service behind the [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S> {
    metrics: Arc<Metrics>,
    tracer: Option<RpcTracer>,
    inner: S,
}

impl<S: NamedService> NamedService for Observe<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResponseBody> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let trace = self.tracer.as_ref().map(|tracer| tracer.start(&path, request.headers()));
        let response = match &trace {
            None => Either::Left(self.inner.call(request)),
            Some(trace) => {
                let _attached = trace.context().clone().attach();
                Either::Right(self.inner.call(request).with_context(trace.context().clone()))
            }
        };
        Box::pin(async move {
            if let Some(trace) = &trace {
                telemetry::record_trace_id(&trace.trace_id());
            }
            let response = response.await?;
            // A unary error's status is in the headers; success is in the trailers, which
            // are not sent yet, so no header means OK.
            let code = response.headers().get("grpc-status").and_then(|value| value.to_str().ok()).unwrap_or("0");
            let elapsed = started.elapsed();
            metrics.observe_rpc(&path, code, elapsed);
            if let Some(trace) = trace {
                trace.finish(code);
            }
            tracing::info!(grpc.code = code, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "rpc finished");
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::io::Write;
    use std::sync::Mutex;

    use tower::ServiceExt;

    use super::*;
    use crate::api::gateway::testing;

    /// Log output written into memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<serde_json::Value> {
            let bytes = self.0.lock().expect("lock").clone();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect()
        }
    }

    #[tokio::test]
    async fn every_rpc_is_counted_by_service_method_and_code_and_logged_once() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().json().flatten_event(true).with_writer(move || writer.clone()).finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let (pool, redis, resolver) = testing::unreachable_dependencies();
        let metrics = Metrics::new(pool, redis, resolver);
        let layer = ObserveLayer::new(metrics.clone(), None);
        let inner = tower::service_fn(|request: http::Request<()>| async move {
            let response = if request.uri().path().ends_with("/GetUser") {
                http::Response::new(tonic::body::Body::empty())
            } else {
                tonic::Status::not_found("no such user").into_http()
            };
            Ok::<_, Infallible>(response)
        });
        for path in ["/tenantd.v1.UserService/GetUser", "/tenantd.v1.UserService/DeleteUser"] {
            let request = http::Request::builder().uri(path).body(()).expect("request");
            layer.layer(inner).oneshot(request).await.expect("infallible");
        }

        let text = metrics.render();
        for expected in [
            r#"tenantd_rpc_requests_total{service="tenantd.v1.UserService",method="GetUser",code="OK"} 1"#,
            r#"tenantd_rpc_requests_total{service="tenantd.v1.UserService",method="DeleteUser",code="NotFound"} 1"#,
            r#"tenantd_rpc_duration_seconds_count{service="tenantd.v1.UserService",method="GetUser",code="OK"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        let finished: Vec<_> = captured.lines().into_iter().filter(|line| line["message"] == "rpc finished").collect();
        assert_eq!(finished.len(), 2, "one line per RPC: {finished:?}");
        assert_eq!(finished[0]["grpc.code"], "0");
        assert_eq!(finished[1]["grpc.code"], "5");
        assert_eq!(finished[0]["level"], "INFO");
        assert!(finished.iter().all(|line| line["elapsed_ms"].as_f64().is_some()), "{finished:?}");
    }
}
