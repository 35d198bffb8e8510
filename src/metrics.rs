//! Prometheus metrics, served on their own port (`--metrics-addr`; off unless set).
//!
//! Families: RPC count and latency by service, method and code; the database pool's size,
//! in-use connections and acquire waits; the tenant-resolution cache's hits and misses;
//! Redis availability. No metric has a tenant label: tenants are unbounded, so per-tenant
//! usage is served by `TenantService.GetTenantUsage` instead.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::RedisCache;
use crate::db::PgPool;
use crate::tenancy::resolver::TenantResolver;

/// Labels of the RPC families.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    service: String,
    method: String,
    code: String,
}

/// Labels of the quota warnings: the plan (bounded: plans are the platform's), the quota and
/// the threshold crossed. Never the tenant.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaWarningLabels {
    plan: String,
    quota: String,
    threshold_percent: String,
}

/// Quota warnings of the process, counted wherever a create crosses a threshold and
/// exposed by every [`Metrics`] of the process.
static QUOTA_WARNINGS: std::sync::LazyLock<Family<QuotaWarningLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

/// Counts one crossing of `threshold_percent` of a `quota` by a tenant on `plan`.
pub fn record_quota_warning(plan: &str, quota: &str, threshold_percent: i64) {
    let labels = QuotaWarningLabels {
        plan: plan.to_owned(),
        quota: quota.to_owned(),
        threshold_percent: threshold_percent.to_string(),
    };
    QUOTA_WARNINGS.get_or_create(&labels).inc();
}

/// Labels of the rate-limit warnings: the plan and the threshold crossed. Never the tenant.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateWarningLabels {
    plan: String,
    threshold_percent: String,
}

/// Sustained rate-limit warnings of the process (decision 0023), counted by the writer that
/// records their events.
static RATE_WARNINGS: std::sync::LazyLock<Family<RateWarningLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

/// Rate-limit warnings dropped because their queue to the writer was full.
static RATE_WARNINGS_DROPPED: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);

/// Counts one crossing of `threshold_percent` of the rate limit by a tenant on `plan`.
pub fn record_rate_warning(plan: &str, threshold_percent: u32) {
    let labels = RateWarningLabels { plan: plan.to_owned(), threshold_percent: threshold_percent.to_string() };
    RATE_WARNINGS.get_or_create(&labels).inc();
}

/// Counts one rate-limit warning dropped before it was recorded.
pub fn record_rate_warning_dropped() {
    RATE_WARNINGS_DROPPED.inc();
}

fn latency_histogram() -> Histogram {
    // 250 µs to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RpcLabels, Counter>,
    latency: Family<RpcLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every family; the gauges read `pool`, `redis` and `resolver` at scrape time.
    pub fn new(pool: PgPool, redis: RedisCache, resolver: Arc<TenantResolver>) -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RpcLabels, Counter>::default();
        let latency = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("tenantd_rpc_requests", "RPCs handled, by service, method and gRPC code", requests.clone());
        registry.register(
            "tenantd_rpc_duration_seconds",
            "RPC latency, by service, method and gRPC code",
            latency.clone(),
        );
        registry.register(
            "tenantd_quota_warnings",
            "Creates that crossed 80% or 100% of a quota, by plan (`none`: no plan), quota and threshold",
            QUOTA_WARNINGS.clone(),
        );
        registry.register(
            "tenantd_rate_limit_warnings",
            "Tenants whose requests over the warning window crossed 80% or 100% of their rate limit, by plan \
             (`none`: no plan) and threshold",
            RATE_WARNINGS.clone(),
        );
        registry.register(
            "tenantd_rate_limit_warnings_dropped",
            "Rate-limit warnings dropped because the queue to their writer was full",
            RATE_WARNINGS_DROPPED.clone(),
        );
        registry.register_collector(Box::new(Dependencies { pool, redis, resolver }));
        Arc::new(Self { registry, requests, latency })
    }

    /// Records one RPC: `path` is `/package.Service/Method`, `code` the numeric gRPC code.
    pub fn observe_rpc(&self, path: &str, code: &str, elapsed: Duration) {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let service = parts.next().unwrap_or_default().to_owned();
        let method = parts.next().unwrap_or_default().to_owned();
        let code = code_name(code).to_owned();
        let labels = RpcLabels { service, method, code };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::error!("could not encode metrics");
        }
        text
    }

    /// Serves `GET /metrics` on `listener` until `stop` is cancelled.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let metrics = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&metrics, request.uri().path())) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(error = %error, "metrics connection ended");
                }
            });
        }
    }
}

fn respond(metrics: &Metrics, path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = if path == "/metrics" {
        (hyper::StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics.render())
    } else {
        (hyper::StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found; try /metrics\n".to_owned())
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// gRPC code names as grpc-ecosystem's Prometheus middleware spells them.
fn code_name(code: &str) -> &'static str {
    match code.parse::<i32>().map(tonic::Code::from_i32) {
        Ok(tonic::Code::Ok) => "OK",
        Ok(tonic::Code::Cancelled) => "Canceled",
        Ok(tonic::Code::Unknown) => "Unknown",
        Ok(tonic::Code::InvalidArgument) => "InvalidArgument",
        Ok(tonic::Code::DeadlineExceeded) => "DeadlineExceeded",
        Ok(tonic::Code::NotFound) => "NotFound",
        Ok(tonic::Code::AlreadyExists) => "AlreadyExists",
        Ok(tonic::Code::PermissionDenied) => "PermissionDenied",
        Ok(tonic::Code::ResourceExhausted) => "ResourceExhausted",
        Ok(tonic::Code::FailedPrecondition) => "FailedPrecondition",
        Ok(tonic::Code::Aborted) => "Aborted",
        Ok(tonic::Code::OutOfRange) => "OutOfRange",
        Ok(tonic::Code::Unimplemented) => "Unimplemented",
        Ok(tonic::Code::Internal) => "Internal",
        Ok(tonic::Code::Unavailable) => "Unavailable",
        Ok(tonic::Code::DataLoss) => "DataLoss",
        Ok(tonic::Code::Unauthenticated) => "Unauthenticated",
        Err(_) => "Unknown",
    }
}

/// Dependency metrics, read at scrape time.
struct Dependencies {
    pool: PgPool,
    redis: RedisCache,
    resolver: Arc<TenantResolver>,
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Dependencies").finish_non_exhaustive()
    }
}

impl Collector for Dependencies {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let state = self.pool.state();
        let statistics = &state.statistics;
        let max = i64::from(self.pool.config().max_size);
        let open = i64::from(state.connections);
        let in_use = open - i64::from(state.idle_connections);
        gauge(&mut encoder, "tenantd_db_pool_max_connections", "Largest size of the PostgreSQL pool", max)?;
        gauge(&mut encoder, "tenantd_db_pool_connections", "Open PostgreSQL connections in the pool", open)?;
        gauge(
            &mut encoder,
            "tenantd_db_pool_in_use_connections",
            "PostgreSQL connections checked out by requests",
            in_use,
        )?;
        counter(&mut encoder, "tenantd_db_pool_acquires", "Pool checkouts served at once", statistics.get_direct)?;
        counter(
            &mut encoder,
            "tenantd_db_pool_acquires_waited",
            "Pool checkouts that had to wait",
            statistics.get_waited,
        )?;
        counter(
            &mut encoder,
            "tenantd_db_pool_acquire_timeouts",
            "Pool checkouts that timed out (UNAVAILABLE)",
            statistics.get_timed_out,
        )?;
        let waited = ConstCounter::new(statistics.get_wait_time.as_secs_f64());
        waited.encode(encoder.encode_descriptor(
            "tenantd_db_pool_acquire_wait_seconds",
            "Time requests spent waiting for a pooled connection",
            None,
            waited.metric_type(),
        )?)?;
        let (local, shared, database) = self.resolver.cache_statistics();
        counter(
            &mut encoder,
            "tenantd_resolution_cache_local_hits",
            "Resolutions answered by the in-process cache",
            local,
        )?;
        counter(&mut encoder, "tenantd_resolution_cache_redis_hits", "Resolutions answered by Redis", shared)?;
        counter(&mut encoder, "tenantd_resolution_cache_misses", "Resolutions that read PostgreSQL", database)?;
        gauge(
            &mut encoder,
            "tenantd_redis_up",
            "1 if Redis answered its last probe or operation",
            i64::from(self.redis.is_available()),
        )?;
        Ok(())
    }
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}
