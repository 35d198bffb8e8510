//! The server's settings as plain values: what [`Application::build`](crate::startup::Application::build)
//! needs, independent of where the values came from.
//!
//! The command line ([`crate::cli`]) parses flags and `TENANTD_*` variables and converts them
//! into a [`Config`]; tests change fields of it directly. Durations are [`Duration`]s, sizes are
//! plain integers with their unit in the field's name or doc comment.
//!
//! Secrets (database URLs, which may carry passwords, the Redis URL and the bootstrap platform
//! token) are [`SecretString`]s: their `Debug` prints `[REDACTED]`, so `{config:?}` is safe to
//! log, and the value is reached only with [`ExposeSecret::expose_secret`] where it is used.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use secrecy::{ExposeSecret, SecretString};

/// Everything `tenantd serve` needs to build and run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the gRPC server listens on; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`); `None` turns it off.
    pub metrics_addr: Option<SocketAddr>,
    /// TLS of the gRPC server; `None` serves plaintext.
    pub tls: Option<TlsConfig>,
    /// Address of a plaintext port that serves only grpc.health.v1 (for Kubernetes gRPC
    /// probes, which do not speak TLS); `None` turns it off.
    pub health_listen_addr: Option<SocketAddr>,
    /// The bootstrap platform token: a bearer token with every platform permission, audited
    /// as `bootstrap`, for creating the first operators; must not be empty. `None` disables
    /// it, and platform calls (control plane, and data plane with `x-tenant-*`) then need an
    /// operator key.
    pub platform_token: Option<SecretString>,
    /// PostgreSQL: connection URLs, migrations and the pool.
    pub database: DatabaseConfig,
    /// Redis, for shared caches and usage counts; the server keeps serving without it.
    pub redis: RedisConfig,
    /// How long a tenant's resolved state may be cached; bounds staleness when an invalidation
    /// is lost (for example while Redis is down).
    pub tenant_cache_ttl: Duration,
    /// How many replicas share each rate limit while Redis is unavailable: each replica's
    /// local fallback then admits its share, the limit divided by this (decision 0017).
    pub rate_limit_fallback_replicas: u32,
    /// The window a tenant's requests are counted over for sustained rate-limit warnings
    /// (80% and 100% of its limit times this; decision 0023).
    pub rate_warning_window: Duration,
    /// Per-connection and per-request limits of the gRPC transport.
    pub limits: ServerLimits,
    /// Keepalive and maximum age of client connections.
    pub connections: ConnectionConfig,
    /// How often usage bookkeeping (API keys' `last_used_time` in PostgreSQL, per-tenant request
    /// counts in Redis) is written, in batches outside requests.
    pub usage_flush_interval: Duration,
    /// How often the health task probes PostgreSQL and Redis (a probe itself may wait up to
    /// the longer of this and 1 s).
    pub health_interval: Duration,
    /// What happens between the shutdown signal and the server stopping.
    pub shutdown: ShutdownConfig,
    /// The WatchEvents stream.
    pub events: EventsConfig,
    /// The worker that runs long-running operations (tenant moves).
    pub operations: OperationsConfig,
    /// OpenTelemetry traces exported over OTLP/gRPC; `None` (the default) turns them off.
    pub traces: Option<TracesConfig>,
}

/// TLS of the gRPC server, from PEM files that are read again when they change.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates that sign client certificates; when set, every client must present
    /// one (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are read again; a change serves new connections with the new
    /// certificate.
    pub reload_interval: Duration,
}

/// PostgreSQL settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// URL of the app role (NOSUPERUSER, NOBYPASSRLS, owns nothing), used by the pool and the
    /// health probe. `sslmode` and `sslrootcert` in it choose TLS (see [`crate::db::connect`]).
    pub url: SecretString,
    /// URL of the migration role (a superuser, or a CREATEROLE owner of the database); needed
    /// when `migrate` is set.
    pub migration_url: Option<SecretString>,
    /// URL of the provisioning role (`tenantd_provisioner`: may only become `tenantd_owner`),
    /// which creates schema tenants' schemas; `None` disables the schema tier.
    pub provisioning_url: Option<SecretString>,
    /// Whether pending migrations are applied, with `migration_url`, before serving.
    pub migrate: bool,
    /// Maximum number of connections in the app-role pool.
    pub pool_size: u32,
    /// How long a request waits for a pooled connection before failing with UNAVAILABLE.
    pub acquire_timeout: Duration,
}

/// Redis settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Redis URL (may carry a password); `rediss://` connects with TLS.
    pub url: SecretString,
    /// CA certificates that sign the Redis server's certificate (with `rediss://`); without
    /// it, the system's CA certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Whether `url` names a Redis Cluster (comma-separated seed nodes' URLs).
    pub cluster: bool,
    /// Maximum number of connections in the Redis pool.
    pub pool_size: u32,
    /// Timeout of one Redis operation; past it the cache is skipped for that request.
    pub operation_timeout: Duration,
}

/// Limits of the gRPC transport.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Maximum number of concurrent HTTP/2 streams (in-flight RPCs) per connection.
    pub max_concurrent_streams: u32,
    /// Maximum number of HTTP/2 streams a client may reset before the server has accepted them
    /// (defends against rapid-reset floods).
    pub http2_max_pending_reset_streams: usize,
    /// Maximum size of the HTTP/2 header list (all metadata of one request), in bytes; larger
    /// requests are refused by the transport (HTTP 431).
    pub max_header_list_bytes: u32,
    /// Maximum size of a decoded request message, in bytes (above it: RESOURCE_EXHAUSTED).
    pub max_decode_message_bytes: usize,
    /// Maximum size of an encoded response message, in bytes.
    pub max_encode_message_bytes: usize,
    /// Server-side deadline of every RPC; a client's shorter `grpc-timeout` wins.
    pub rpc_timeout: Duration,
}

/// Keepalive and lifetime of client connections.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Interval of HTTP/2 keepalive pings to idle clients.
    pub http2_keepalive_interval: Duration,
    /// How long to wait for a keepalive ping's answer before closing the connection.
    pub http2_keepalive_timeout: Duration,
    /// TCP keepalive idle time of accepted connections.
    pub tcp_keepalive: Duration,
    /// Connections older than this are sent GOAWAY, so clients rebalance across replicas.
    pub max_connection_age: Duration,
    /// How long a connection past its maximum age may finish in-flight RPCs.
    pub max_connection_age_grace: Duration,
}

/// Graceful shutdown.
#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    /// After the shutdown signal, how long readiness reports NOT_SERVING before the server stops
    /// accepting work (Kubernetes removes endpoints concurrently with SIGTERM).
    pub predrain: Duration,
    /// Upper bound on draining in-flight RPCs after the server stops accepting work.
    pub grace: Duration,
}

/// OpenTelemetry traces: one server span per RPC of the tenantd services (not health or
/// reflection), with the tenant transaction and the Redis calls as child spans, exported in
/// batches over OTLP/gRPC. The command line reads the standard `OTEL_*` variables into it.
#[derive(Debug, Clone)]
pub struct TracesConfig {
    /// URL of the OTLP/gRPC collector, for example `http://127.0.0.1:4317` (plaintext).
    pub endpoint: String,
    /// How long one export may take, retries included.
    pub export_timeout: Duration,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Further resource attributes (`OTEL_RESOURCE_ATTRIBUTES`); `service.name` wins over one here.
    pub resource_attributes: Vec<(String, String)>,
    /// Which traces are recorded and exported.
    pub sampler: TraceSampler,
}

/// Which traces are recorded, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSampler {
    /// What is decided for a trace this server starts (no sampled caller).
    pub root: RootSampler,
    /// Whether a caller's `traceparent` decides instead, when it has one (`parentbased_*`).
    pub follow_parent: bool,
}

/// The decision for a trace without a deciding parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampler {
    /// Record every trace.
    AlwaysOn,
    /// Record none.
    AlwaysOff,
    /// Record this fraction (0 to 1) of traces, chosen by trace id.
    TraceIdRatio(f64),
}

/// The WatchEvents stream (decision 0015).
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// How far back a watcher may start, by time or cursor; older is FAILED_PRECONDITION.
    pub retention: Duration,
    /// How often the event hub looks for new events when no wake-up arrived.
    pub poll_interval: Duration,
    /// Messages buffered per watcher before it counts as slow (at least 1).
    pub watcher_buffer: usize,
    /// How long a watcher's buffer may stay full before its stream ends with WATCHER_TOO_SLOW.
    pub slow_watcher_timeout: Duration,
}

/// The long-running operation worker.
#[derive(Debug, Clone)]
pub struct OperationsConfig {
    /// How long a claimed operation stays this replica's without a renewal: after a crash,
    /// another replica (or this one, restarted) resumes it once this has passed. Renewed
    /// every third of it.
    pub lease: Duration,
    /// How often the worker looks for operations to run (a new operation started on this
    /// replica wakes it at once).
    pub poll_interval: Duration,
    /// How long a move waits after its cutover before removing the source copy, so that
    /// requests routed by a replica's previous resolution have finished (they read the
    /// source, which is complete until then).
    pub move_drain: Duration,
    /// How long a finished export's archive stays downloadable (ReadTenantArchive); then it
    /// is ARCHIVE_NOT_FOUND and the sweep deletes its chunks.
    pub archive_retention: Duration,
    /// How long after its deletion a tenant is purged by the retention sweep.
    pub purge_retention: Duration,
    /// Rows a purge deletes per batch (each batch its own short transaction).
    pub purge_batch_rows: i64,
}
