//! Command line and environment: every setting is a flag and a `TENANTD_*` variable.
//!
//! This is the only place (with `main.rs` and [`crate::client::args`]) that knows clap. `tenantd
//! serve` parses into [`ServeArgs`], which converts into the plain [`Config`] the server is built
//! from; nothing else reads [`ServeArgs`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::client::args::{EventsArgs, HealthArgs, KeysArgs, OperationsArgs, OperatorsArgs, ResolveArgs, TenantsArgs};
use crate::config::{
    ArchiveSigningKeys, Config, ConnectionConfig, DatabaseConfig, EventsConfig, OperationsConfig, RedisConfig,
    RootSampler, ServerLimits, ShutdownConfig, TlsConfig, TraceSampler, TracesConfig,
};

/// `tenantd`: the tenant control plane.
#[derive(Debug, Parser)]
#[command(name = "tenantd", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "TENANTD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations, then exit.
    Migrate(MigrateArgs),
    /// Run a complete local tenantd on a throwaway PostgreSQL cluster of its own, with a demo
    /// tenant; Ctrl-C stops everything it started.
    Dev(DevArgs),
    /// Check a server's grpc.health.v1 status: exit 0 if SERVING, 1 if not, 2 if unreachable.
    Health(HealthArgs),
    /// Manage tenants through the control-plane API.
    Tenants(TenantsArgs),
    /// Manage a tenant's API keys.
    Keys(KeysArgs),
    /// Manage operators: the platform's named credentials and their roles.
    Operators(OperatorsArgs),
    /// Follow and cancel long-running operations (tenant moves).
    Operations(OperationsArgs),
    /// Show the tenant named by an id, slug, domain, channel binding or API key.
    Resolve(ResolveArgs),
    /// Watch tenant events (WatchEvents) as JSON lines.
    Events(EventsArgs),
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of `tenantd migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL of the migration role: a superuser, or a role with CREATEROLE that owns
    /// the database and may set citus.propagate_set_commands (README, "Migration role").
    #[arg(long, env = "TENANTD_MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: SecretString,
    /// How many tenant schemas are migrated at once, each on its own connection.
    #[arg(long, env = "TENANTD_MIGRATE_SCHEMA_PARALLELISM", default_value_t = 4)]
    pub schema_parallelism: usize,
    /// Redis URL of the servers' shared caches: each tenant whose schema was migrated is
    /// announced on it, so every replica serves it again at once; without it, replicas notice
    /// when their cached record expires (TENANTD_TENANT_CACHE_TTL_MS).
    #[arg(long, env = "TENANTD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,
    /// `--redis-url` names a Redis Cluster (comma-separated seed nodes' URLs).
    #[arg(long, env = "TENANTD_REDIS_CLUSTER")]
    pub redis_cluster: bool,
}

/// Settings of `tenantd dev`. Everything else is `serve`'s default.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Directory of the PostgreSQL cluster, kept on exit and reused (with its data) next time;
    /// without it, a temporary directory removed on exit.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Folder of PostgreSQL's initdb and pg_ctl; without it, PATH, then the usual install
    /// folders (such as /usr/lib/postgresql/<version>/bin).
    #[arg(long, value_name = "DIR")]
    pub pg_bindir: Option<PathBuf>,
    /// Address the gRPC server listens on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen_addr: SocketAddr,
    /// Redis URL; if nothing answers there, tenantd serves without it.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: SecretString,
    /// Bearer token of platform callers; without it, a random one (printed).
    #[arg(long)]
    pub platform_token: Option<SecretString>,
}

/// Settings of `tenantd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the gRPC server listens on; port 0 picks a free port.
    #[arg(long, env = "TENANTD_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,
    /// PostgreSQL URL of the app role (NOSUPERUSER, NOBYPASSRLS, owns nothing).
    #[arg(long, env = "TENANTD_DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,
    /// PostgreSQL URL of the migration role; required with `--migrate`.
    #[arg(long, env = "TENANTD_MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: Option<SecretString>,
    /// PostgreSQL URL of the provisioning role (`tenantd_provisioner`), which creates schema
    /// tenants' schemas; without it, CreateTenant with isolation tier SCHEMA is UNAVAILABLE
    /// (SCHEMA_TIER_UNAVAILABLE) and pooled tenants work as before.
    #[arg(long, env = "TENANTD_PROVISIONING_DATABASE_URL", hide_env_values = true)]
    pub provisioning_database_url: Option<SecretString>,
    /// Apply pending migrations before serving.
    #[arg(long, env = "TENANTD_MIGRATE", default_value_t = false)]
    pub migrate: bool,
    /// Redis URL for shared caches; tenantd keeps serving without it.
    #[arg(long, env = "TENANTD_REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: SecretString,
    /// The bootstrap platform token: full platform access, audited as `bootstrap`, to create
    /// the first operators. Leave it unset to disable it (then only operator keys are accepted).
    #[arg(long, env = "TENANTD_PLATFORM_TOKEN", hide_env_values = true)]
    pub platform_token: Option<SecretString>,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`); off unless set.
    #[arg(long, env = "TENANTD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// PEM certificate chain of the gRPC server; with `--tls-key-file`, the server speaks TLS
    /// only. Read again when it changes.
    #[arg(long, env = "TENANTD_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `--tls-cert-file`.
    #[arg(long, env = "TENANTD_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates of client certificates: every client must present a certificate
    /// they signed (mutual TLS). Needs `--tls-cert-file`.
    #[arg(long, env = "TENANTD_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// How often the TLS files are read again, in milliseconds; new connections get a changed
    /// certificate, and a file that cannot be used keeps the previous one.
    #[arg(long, env = "TENANTD_TLS_RELOAD_INTERVAL_MS", default_value = "5000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub tls_reload_interval: Duration,
    /// Address of a plaintext port that serves only grpc.health.v1, for Kubernetes gRPC probes
    /// (which do not speak TLS); off unless set.
    #[arg(long, env = "TENANTD_HEALTH_LISTEN_ADDR")]
    pub health_listen_addr: Option<SocketAddr>,
    /// PEM CA certificates that sign the Redis server's certificate (with a `rediss://` URL);
    /// default: the system's CA certificates.
    #[arg(long, env = "TENANTD_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,
    /// TENANTD_REDIS_URL names a Redis Cluster: a comma-separated list of seed nodes'
    /// `redis://` URLs (one is enough; more survive a seed being down).
    #[arg(long, env = "TENANTD_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Maximum PostgreSQL connections in the pool.
    #[arg(long, env = "TENANTD_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// How long a request waits for a pooled connection before failing with UNAVAILABLE, in milliseconds.
    #[arg(long, env = "TENANTD_DB_ACQUIRE_TIMEOUT_MS", default_value = "2000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub db_acquire_timeout: Duration,
    /// Maximum Redis connections in the pool.
    #[arg(long, env = "TENANTD_REDIS_POOL_SIZE", default_value_t = 8)]
    pub redis_pool_size: u32,
    /// Timeout of one Redis operation, in milliseconds; past it the cache is skipped for that request.
    #[arg(long, env = "TENANTD_REDIS_TIMEOUT_MS", default_value = "250")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub redis_timeout: Duration,
    /// How long a tenant's resolved state may be cached, in milliseconds. Bounds staleness when an
    /// invalidation is lost (for example while Redis is down).
    #[arg(long, env = "TENANTD_TENANT_CACHE_TTL_MS", default_value = "30000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub tenant_cache_ttl: Duration,
    /// While Redis is unavailable, each replica enforces every rate limit divided by this
    /// (rounded up): set it to the number of replicas, so that together they admit about the
    /// shared limit (1: each replica admits the whole limit).
    #[arg(long, env = "TENANTD_RATE_LIMIT_FALLBACK_REPLICAS", default_value_t = 1)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_fallback_replicas: u32,
    /// The window a tenant's requests are counted over for rate-limit warnings, in
    /// milliseconds: admitting 80% (then 100%) of its rate limit times this window records a
    /// `rate_limit.warning` event and counts `tenantd_rate_limit_warnings_total`.
    #[arg(long, env = "TENANTD_RATE_WARNING_WINDOW_MS", default_value = "60000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub rate_warning_window: Duration,
    /// Maximum concurrent HTTP/2 streams (in-flight RPCs) per connection.
    #[arg(long, env = "TENANTD_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
    /// Maximum HTTP/2 streams a client may reset before the server has accepted them
    /// (defends against rapid-reset floods).
    #[arg(long, env = "TENANTD_HTTP2_MAX_PENDING_RESET_STREAMS", default_value_t = 32)]
    pub http2_max_pending_reset_streams: usize,
    /// Maximum size of the HTTP/2 header list (all metadata of one request), in bytes.
    /// Larger requests are refused by the transport before tenantd sees them (HTTP 431,
    /// which gRPC clients report as UNKNOWN); within it, bad metadata gets INVALID_ARGUMENT.
    #[arg(long, env = "TENANTD_MAX_HEADER_LIST_BYTES", default_value_t = 64 * 1024)]
    pub max_header_list_bytes: u32,
    /// Maximum size of a decoded request message, in bytes (above it: RESOURCE_EXHAUSTED).
    #[arg(long, env = "TENANTD_MAX_DECODE_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_decode_message_bytes: usize,
    /// Maximum size of an encoded response message, in bytes.
    #[arg(long, env = "TENANTD_MAX_ENCODE_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_encode_message_bytes: usize,
    /// Server-side deadline of every RPC, in milliseconds; a client's shorter `grpc-timeout` wins.
    #[arg(long, env = "TENANTD_RPC_TIMEOUT_MS", default_value = "10000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub rpc_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings to idle clients, in milliseconds.
    #[arg(long, env = "TENANTD_HTTP2_KEEPALIVE_INTERVAL_MS", default_value = "30000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub http2_keepalive_interval: Duration,
    /// How long to wait for a keepalive ping's answer before closing the connection, in milliseconds.
    #[arg(long, env = "TENANTD_HTTP2_KEEPALIVE_TIMEOUT_MS", default_value = "10000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub http2_keepalive_timeout: Duration,
    /// TCP keepalive idle time of accepted connections, in milliseconds.
    #[arg(long, env = "TENANTD_TCP_KEEPALIVE_MS", default_value = "60000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub tcp_keepalive: Duration,
    /// Connections older than this, in milliseconds, are sent GOAWAY, so clients rebalance across
    /// replicas.
    #[arg(long, env = "TENANTD_MAX_CONNECTION_AGE_MS", default_value = "1800000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub max_connection_age: Duration,
    /// How long a connection past its maximum age may finish in-flight RPCs, in milliseconds.
    #[arg(long, env = "TENANTD_MAX_CONNECTION_AGE_GRACE_MS", default_value = "30000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub max_connection_age_grace: Duration,
    /// How often usage bookkeeping is written, in milliseconds; in batches outside requests: API
    /// keys' `last_used_time` (PostgreSQL) and per-tenant request counts (Redis).
    #[arg(long, env = "TENANTD_USAGE_FLUSH_MS", default_value = "5000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub usage_flush: Duration,
    /// How often the health task probes PostgreSQL and Redis, in milliseconds.
    #[arg(long, env = "TENANTD_HEALTH_INTERVAL_MS", default_value = "1000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub health_interval: Duration,
    /// After SIGTERM, how long readiness reports NOT_SERVING before the server stops accepting
    /// work, in milliseconds (Kubernetes removes endpoints concurrently with SIGTERM).
    #[arg(long, env = "TENANTD_SHUTDOWN_PREDRAIN_MS", default_value = "0")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub shutdown_predrain: Duration,
    /// Upper bound on draining in-flight RPCs after the server stops accepting work, in milliseconds.
    #[arg(long, env = "TENANTD_SHUTDOWN_GRACE_MS", default_value = "20000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub shutdown_grace: Duration,
    /// How far back, in milliseconds, WatchEvents may start (by time or cursor); older is
    /// FAILED_PRECONDITION `EVENT_RETENTION_EXCEEDED`. Default 7 days.
    #[arg(long, env = "TENANTD_EVENT_RETENTION_MS", default_value = "604800000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub event_retention: Duration,
    /// How often, in milliseconds, the event stream looks for new events when no wake-up
    /// arrived (a lost wake-up delays delivery by at most this).
    #[arg(long, env = "TENANTD_EVENT_POLL_MS", default_value = "1000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub event_poll: Duration,
    /// Messages buffered per WatchEvents stream before the watcher counts as slow.
    #[arg(long, env = "TENANTD_EVENT_WATCHER_BUFFER", default_value_t = 32)]
    pub event_watcher_buffer: usize,
    /// How long, in milliseconds, a watcher's buffer may stay full before its stream ends
    /// with RESOURCE_EXHAUSTED `WATCHER_TOO_SLOW` (carrying the cursor to resume from).
    #[arg(long, env = "TENANTD_EVENT_SLOW_WATCHER_MS", default_value = "10000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub event_slow_watcher: Duration,
    /// How long, in milliseconds, a long-running operation stays a replica's without a lease
    /// renewal; after a crash another replica resumes it once this has passed.
    #[arg(long, env = "TENANTD_OPERATION_LEASE_MS", default_value = "15000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub operation_lease: Duration,
    /// How often, in milliseconds, the operation worker looks for operations to run.
    #[arg(long, env = "TENANTD_OPERATION_POLL_MS", default_value = "1000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub operation_poll: Duration,
    /// How long, in milliseconds, a tenant move waits after its cutover before it removes the
    /// source copy (requests routed before the cutover finish against the source).
    #[arg(long, env = "TENANTD_MOVE_DRAIN_MS", default_value = "12000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub move_drain: Duration,
    /// How long, in milliseconds, a finished export's archive stays downloadable with
    /// ReadTenantArchive; then it is deleted. Default 7 days.
    #[arg(long, env = "TENANTD_ARCHIVE_RETENTION", default_value = "604800000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub archive_retention: Duration,
    /// How long, in milliseconds, a deleted tenant is kept (ResumeTenant undeletes it) before
    /// the retention sweep purges it. Default 30 days.
    #[arg(long, env = "TENANTD_PURGE_RETENTION", default_value = "2592000000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub purge_retention: Duration,
    /// Rows a purge deletes per batch; each batch is its own short transaction.
    #[arg(long, env = "TENANTD_PURGE_BATCH_ROWS", default_value_t = 1000)]
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub purge_batch_rows: i64,
    /// Keys that sign tenant archives, `id:base64secret,id:base64secret` (each secret at
    /// least 32 bytes): the first signs exports, every one verifies imports, which then must
    /// be signed. Unset: exports are unsigned and signed archives are refused.
    #[arg(long, env = "TENANTD_ARCHIVE_SIGNING_KEYS", hide_env_values = true)]
    #[arg(value_name = "ID:BASE64,...", value_parser = SigningKeysParser)]
    pub archive_signing_keys: Option<ArchiveSigningKeys>,
    /// OpenTelemetry traces, from the standard `OTEL_*` variables.
    #[command(flatten)]
    pub traces: TracesArgs,
}

/// Settings of OpenTelemetry traces: the standard `OTEL_*` variables that apply to a
/// server exporting traces over OTLP/gRPC. Traces are off unless the exporter is `otlp`.
#[derive(Debug, Clone, Args)]
pub struct TracesArgs {
    /// Trace exporter: `otlp` exports traces over OTLP/gRPC; `none` (the default) turns them off.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", value_enum, default_value_t = TracesExporter::None)]
    pub traces_exporter: TracesExporter,
    /// OTLP/gRPC endpoint of every signal (tenantd exports only traces); plaintext `http://`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", default_value = "http://localhost:4317")]
    pub otlp_endpoint: String,
    /// OTLP/gRPC endpoint of traces; wins over `--otlp-endpoint`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_traces_endpoint: Option<String>,
    /// OTLP transport; tenantd speaks only `grpc`, and refuses to start with another.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocol::Grpc)]
    pub otlp_protocol: OtlpProtocol,
    /// OTLP transport of traces; wins over `--otlp-protocol`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value_enum)]
    pub otlp_traces_protocol: Option<OtlpProtocol>,
    /// How long one export of a batch of spans may take, retries included, in milliseconds.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value = "10000")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub otlp_timeout: Duration,
    /// How long one export of traces may take, in milliseconds; wins over `--otlp-timeout`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")]
    #[arg(value_name = "MILLISECONDS", value_parser = parse_millis)]
    pub otlp_traces_timeout: Option<Duration>,
    /// The `service.name` of exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "tenantd")]
    pub service_name: String,
    /// Resource attributes of exported spans, as `key=value,key=value`.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", value_parser = parse_resource_attributes)]
    pub resource_attributes: Option<ResourceAttributes>,
    /// Which traces are recorded: `always_on`, `always_off`, `traceidratio`, or `parentbased_` one
    /// of those (the caller's sampled flag decides when it sends `traceparent`).
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum, default_value_t = SamplerName::ParentbasedAlwaysOn)]
    pub traces_sampler: SamplerName,
    /// The ratio (0 to 1) of the `traceidratio` samplers; 1 when not set.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", value_parser = parse_ratio)]
    pub traces_sampler_arg: Option<f64>,
}

/// `OTEL_TRACES_EXPORTER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TracesExporter {
    /// No traces.
    None,
    /// OTLP over gRPC.
    Otlp,
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`: the transports tenantd has (HTTP is not built in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
}

/// `OTEL_TRACES_SAMPLER`, by its standard names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SamplerName {
    /// Every trace.
    #[value(name = "always_on")]
    AlwaysOn,
    /// No trace.
    #[value(name = "always_off")]
    AlwaysOff,
    /// A ratio of traces, by trace id.
    #[value(name = "traceidratio")]
    TraceIdRatio,
    /// The caller's decision, else every trace.
    #[value(name = "parentbased_always_on")]
    ParentbasedAlwaysOn,
    /// The caller's decision, else none.
    #[value(name = "parentbased_always_off")]
    ParentbasedAlwaysOff,
    /// The caller's decision, else a ratio.
    #[value(name = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

/// `OTEL_RESOURCE_ATTRIBUTES`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAttributes(pub Vec<(String, String)>);

/// Parses `key=value,key=value` (values may be percent-encoded, as the specification allows).
fn parse_resource_attributes(value: &str) -> Result<ResourceAttributes, String> {
    let mut attributes = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("`{pair}` is not key=value"));
        };
        let (key, value) = (key.trim(), percent_decode(value.trim())?);
        if key.is_empty() {
            return Err(format!("`{pair}` has no key"));
        }
        attributes.push((key.to_owned(), value));
    }
    Ok(ResourceAttributes(attributes))
}

/// Decodes `%XX` escapes.
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let escape = value.get(index + 1..index + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok());
            decoded.push(escape.ok_or_else(|| format!("`{value}` has a malformed % escape"))?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| format!("`{value}` is not UTF-8 once decoded"))
}

/// Parses a sampling ratio between 0 and 1.
fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("`{value}` is not a ratio between 0 and 1")),
    }
}

impl From<TracesArgs> for Option<TracesConfig> {
    fn from(args: TracesArgs) -> Self {
        if args.traces_exporter == TracesExporter::None {
            return None;
        }
        let ratio = RootSampler::TraceIdRatio(args.traces_sampler_arg.unwrap_or(1.0));
        let (root, follow_parent) = match args.traces_sampler {
            SamplerName::AlwaysOn => (RootSampler::AlwaysOn, false),
            SamplerName::AlwaysOff => (RootSampler::AlwaysOff, false),
            SamplerName::TraceIdRatio => (ratio, false),
            SamplerName::ParentbasedAlwaysOn => (RootSampler::AlwaysOn, true),
            SamplerName::ParentbasedAlwaysOff => (RootSampler::AlwaysOff, true),
            SamplerName::ParentbasedTraceIdRatio => (ratio, true),
        };
        Some(TracesConfig {
            endpoint: args.otlp_traces_endpoint.unwrap_or(args.otlp_endpoint),
            export_timeout: args.otlp_traces_timeout.unwrap_or(args.otlp_timeout),
            service_name: args.service_name,
            resource_attributes: args.resource_attributes.map(|attributes| attributes.0).unwrap_or_default(),
            sampler: TraceSampler { root, follow_parent },
        })
    }
}

/// Parses a whole number of milliseconds, the unit of every `*_MS` setting.
fn parse_millis(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("`{value}` is not a whole number of milliseconds"))
}

/// Parses [`ArchiveSigningKeys`] with an error that does not repeat the value (clap's
/// `invalid value '<value>'` would print the secrets).
#[derive(Debug, Clone, Copy)]
struct SigningKeysParser;

impl clap::builder::TypedValueParser for SigningKeysParser {
    type Value = ArchiveSigningKeys;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let name = arg.and_then(clap::Arg::get_long).unwrap_or("archive-signing-keys").to_owned();
        let refused = |why: String| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("invalid --{name}: {why}\n"))
        };
        let text = value.to_str().ok_or_else(|| refused("is not UTF-8".to_owned()))?;
        ArchiveSigningKeys::parse(text).map_err(refused)
    }
}

impl From<ServeArgs> for Config {
    fn from(args: ServeArgs) -> Self {
        Self {
            listen_addr: args.listen_addr,
            metrics_addr: args.metrics_addr,
            tls: match (args.tls_cert_file, args.tls_key_file) {
                (Some(cert_file), Some(key_file)) => Some(TlsConfig {
                    cert_file,
                    key_file,
                    client_ca_file: args.tls_client_ca_file,
                    reload_interval: args.tls_reload_interval,
                }),
                _ => None,
            },
            health_listen_addr: args.health_listen_addr,
            platform_token: args.platform_token,
            database: DatabaseConfig {
                url: args.database_url,
                migration_url: args.migration_database_url,
                provisioning_url: args.provisioning_database_url,
                migrate: args.migrate,
                pool_size: args.db_pool_size,
                acquire_timeout: args.db_acquire_timeout,
            },
            redis: RedisConfig {
                url: args.redis_url,
                tls_ca_file: args.redis_tls_ca_file,
                cluster: args.redis_cluster,
                pool_size: args.redis_pool_size,
                operation_timeout: args.redis_timeout,
            },
            tenant_cache_ttl: args.tenant_cache_ttl,
            rate_limit_fallback_replicas: args.rate_limit_fallback_replicas,
            rate_warning_window: args.rate_warning_window,
            limits: ServerLimits {
                max_concurrent_streams: args.max_concurrent_streams,
                http2_max_pending_reset_streams: args.http2_max_pending_reset_streams,
                max_header_list_bytes: args.max_header_list_bytes,
                max_decode_message_bytes: args.max_decode_message_bytes,
                max_encode_message_bytes: args.max_encode_message_bytes,
                rpc_timeout: args.rpc_timeout,
            },
            connections: ConnectionConfig {
                http2_keepalive_interval: args.http2_keepalive_interval,
                http2_keepalive_timeout: args.http2_keepalive_timeout,
                tcp_keepalive: args.tcp_keepalive,
                max_connection_age: args.max_connection_age,
                max_connection_age_grace: args.max_connection_age_grace,
            },
            usage_flush_interval: args.usage_flush,
            health_interval: args.health_interval,
            shutdown: ShutdownConfig { predrain: args.shutdown_predrain, grace: args.shutdown_grace },
            traces: args.traces.into(),
            events: EventsConfig {
                retention: args.event_retention,
                poll_interval: args.event_poll,
                watcher_buffer: args.event_watcher_buffer.max(1),
                slow_watcher_timeout: args.event_slow_watcher,
            },
            operations: OperationsConfig {
                lease: args.operation_lease.max(Duration::from_millis(300)),
                poll_interval: args.operation_poll,
                move_drain: args.move_drain,
                archive_retention: args.archive_retention,
                purge_retention: args.purge_retention,
                purge_batch_rows: args.purge_batch_rows,
                archive_signing_keys: args.archive_signing_keys.unwrap_or_default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use secrecy::ExposeSecret;

    use super::*;

    fn serve(flags: &[&str]) -> ServeArgs {
        let mut argv = vec!["tenantd", "serve"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Serve(args) => *args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn every_serve_flag_reaches_its_config_field() {
        let config = Config::from(serve(&[
            "--listen-addr=127.0.0.1:1001",
            "--database-url=postgres://app@db/app",
            "--migration-database-url=postgres://owner@db/app",
            "--migrate",
            "--redis-url=redis://cache:6380",
            "--platform-token=token-1",
            "--metrics-addr=127.0.0.1:1002",
            "--tls-cert-file=/tls/cert.pem",
            "--tls-key-file=/tls/key.pem",
            "--tls-client-ca-file=/tls/clients.pem",
            "--tls-reload-interval=23",
            "--health-listen-addr=127.0.0.1:1003",
            "--redis-tls-ca-file=/tls/redis-ca.pem",
            "--db-pool-size=3",
            "--db-acquire-timeout=4",
            "--redis-pool-size=5",
            "--redis-timeout=6",
            "--tenant-cache-ttl=7",
            "--max-concurrent-streams=8",
            "--http2-max-pending-reset-streams=9",
            "--max-header-list-bytes=10",
            "--max-decode-message-bytes=11",
            "--max-encode-message-bytes=12",
            "--rpc-timeout=13",
            "--http2-keepalive-interval=14",
            "--http2-keepalive-timeout=15",
            "--tcp-keepalive=16",
            "--max-connection-age=17",
            "--max-connection-age-grace=18",
            "--usage-flush=19",
            "--health-interval=20",
            "--shutdown-predrain=21",
            "--shutdown-grace=22",
            "--event-retention=23",
            "--event-poll=24",
            "--event-watcher-buffer=25",
            "--event-slow-watcher=26",
            "--rate-limit-fallback-replicas=27",
            "--rate-warning-window=28",
            "--redis-cluster",
        ]));
        let millis = Duration::from_millis;
        assert_eq!(config.listen_addr, "127.0.0.1:1001".parse().expect("address"));
        assert_eq!(config.metrics_addr, Some("127.0.0.1:1002".parse().expect("address")));
        assert_eq!(config.platform_token.as_ref().map(ExposeSecret::expose_secret), Some("token-1"));
        let tls = config.tls.as_ref().expect("TLS is on");
        assert_eq!(tls.cert_file, PathBuf::from("/tls/cert.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/tls/key.pem"));
        assert_eq!(tls.client_ca_file, Some(PathBuf::from("/tls/clients.pem")));
        assert_eq!(tls.reload_interval, millis(23));
        assert_eq!(config.health_listen_addr, Some("127.0.0.1:1003".parse().expect("address")));
        assert_eq!(config.redis.tls_ca_file, Some(PathBuf::from("/tls/redis-ca.pem")));
        assert_eq!(config.database.url.expose_secret(), "postgres://app@db/app");
        assert_eq!(
            config.database.migration_url.as_ref().map(ExposeSecret::expose_secret),
            Some("postgres://owner@db/app")
        );
        assert!(config.database.migrate);
        assert_eq!(config.database.pool_size, 3);
        assert_eq!(config.database.acquire_timeout, millis(4));
        assert_eq!(config.redis.url.expose_secret(), "redis://cache:6380");
        assert_eq!(config.redis.pool_size, 5);
        assert_eq!(config.redis.operation_timeout, millis(6));
        assert_eq!(config.tenant_cache_ttl, millis(7));
        assert_eq!(config.rate_limit_fallback_replicas, 27);
        assert_eq!(config.rate_warning_window, millis(28));
        assert!(config.redis.cluster);
        assert_eq!(config.limits.max_concurrent_streams, 8);
        assert_eq!(config.limits.http2_max_pending_reset_streams, 9);
        assert_eq!(config.limits.max_header_list_bytes, 10);
        assert_eq!(config.limits.max_decode_message_bytes, 11);
        assert_eq!(config.limits.max_encode_message_bytes, 12);
        assert_eq!(config.limits.rpc_timeout, millis(13));
        assert_eq!(config.connections.http2_keepalive_interval, millis(14));
        assert_eq!(config.connections.http2_keepalive_timeout, millis(15));
        assert_eq!(config.connections.tcp_keepalive, millis(16));
        assert_eq!(config.connections.max_connection_age, millis(17));
        assert_eq!(config.connections.max_connection_age_grace, millis(18));
        assert_eq!(config.usage_flush_interval, millis(19));
        assert_eq!(config.health_interval, millis(20));
        assert_eq!(config.shutdown.predrain, millis(21));
        assert_eq!(config.shutdown.grace, millis(22));
        assert_eq!(config.events.retention, millis(23));
        assert_eq!(config.events.poll_interval, millis(24));
        assert_eq!(config.events.watcher_buffer, 25);
        assert_eq!(config.events.slow_watcher_timeout, millis(26));
        assert!(config.traces.is_none(), "traces are off unless the exporter is otlp");
    }

    #[test]
    fn every_otel_variable_reaches_the_traces_config() {
        let traces = Config::from(serve(&[
            "--database-url=postgres://app@db/app",
            "--platform-token=token",
            "--traces-exporter=otlp",
            "--otlp-endpoint=http://every-signal:4317",
            "--otlp-traces-endpoint=http://collector:4317",
            "--otlp-protocol=grpc",
            "--otlp-traces-protocol=grpc",
            "--otlp-timeout=23",
            "--otlp-traces-timeout=24",
            "--service-name=tenantd-eu",
            "--resource-attributes=deployment.environment=prod, k8s.pod.name=tenantd%2D0",
            "--traces-sampler=parentbased_traceidratio",
            "--traces-sampler-arg=0.25",
        ]))
        .traces
        .expect("traces on");
        assert_eq!(traces.endpoint, "http://collector:4317");
        assert_eq!(traces.export_timeout, Duration::from_millis(24));
        assert_eq!(traces.service_name, "tenantd-eu");
        assert_eq!(
            traces.resource_attributes,
            [
                ("deployment.environment".to_owned(), "prod".to_owned()),
                ("k8s.pod.name".to_owned(), "tenantd-0".to_owned())
            ]
        );
        assert_eq!(traces.sampler, TraceSampler { root: RootSampler::TraceIdRatio(0.25), follow_parent: true });
    }

    #[test]
    fn traces_default_to_every_trace_at_the_standard_endpoint_once_turned_on() {
        let required = ["--database-url=postgres://app@db/app", "--platform-token=token"];
        assert!(Config::from(serve(&required)).traces.is_none(), "off by default");
        let traces = Config::from(serve(&[required[0], required[1], "--traces-exporter=otlp"])).traces.expect("on");
        assert_eq!(traces.endpoint, "http://localhost:4317");
        assert_eq!(traces.export_timeout, Duration::from_secs(10));
        assert_eq!(traces.service_name, "tenantd");
        assert!(traces.resource_attributes.is_empty());
        assert_eq!(traces.sampler, TraceSampler { root: RootSampler::AlwaysOn, follow_parent: true });
        let ratio =
            Config::from(serve(&[required[0], required[1], "--traces-exporter=otlp", "--traces-sampler=traceidratio"]));
        assert_eq!(
            ratio.traces.expect("on").sampler.root,
            RootSampler::TraceIdRatio(1.0),
            "the standard default ratio"
        );
    }

    #[test]
    fn unsupported_trace_settings_are_refused_at_start() {
        let parse = |flag: &str| {
            Cli::try_parse_from([
                "tenantd",
                "serve",
                "--database-url=postgres://app@db/app",
                "--platform-token=t",
                flag,
            ])
        };
        for flag in [
            "--otlp-protocol=http/protobuf",
            "--otlp-traces-protocol=http/json",
            "--traces-exporter=zipkin",
            "--traces-sampler=jaeger_remote",
            "--traces-sampler-arg=1.5",
            "--resource-attributes=novalue",
            "--resource-attributes=bad=%zz",
        ] {
            assert!(parse(flag).is_err(), "{flag} was accepted");
        }
        // Control: the same flags with supported values parse.
        for flag in
            ["--otlp-protocol=grpc", "--traces-exporter=none", "--traces-sampler-arg=0", "--resource-attributes=a=b"]
        {
            assert!(parse(flag).is_ok(), "{flag} was refused");
        }
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = Config::from(serve(&["--database-url=postgres://app@db/app", "--platform-token=token"]));
        assert_eq!(config.listen_addr, "0.0.0.0:50051".parse().expect("address"));
        assert_eq!(config.metrics_addr, None);
        assert!(config.tls.is_none(), "plaintext unless a certificate is given");
        assert_eq!(config.health_listen_addr, None);
        assert_eq!(config.redis.tls_ca_file, None);
        assert!(config.database.migration_url.is_none());
        assert!(!config.database.migrate);
        assert_eq!(config.redis.url.expose_secret(), "redis://127.0.0.1:6379");
        assert_eq!(config.database.acquire_timeout, Duration::from_secs(2));
        assert_eq!(config.redis.operation_timeout, Duration::from_millis(250));
        assert_eq!(config.limits.max_header_list_bytes, 64 * 1024);
        assert_eq!(config.connections.max_connection_age, Duration::from_secs(30 * 60));
        assert_eq!(config.shutdown.predrain, Duration::ZERO);
        assert_eq!(config.shutdown.grace, Duration::from_secs(20));
    }

    #[test]
    fn a_tls_certificate_needs_its_key_and_a_client_ca_needs_a_certificate() {
        let base = ["tenantd", "serve", "--database-url=postgres://app@db/app", "--platform-token=token"];
        let refused = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra)).is_err();
        assert!(refused(&["--tls-cert-file=/c.pem"]));
        assert!(refused(&["--tls-key-file=/k.pem"]));
        assert!(refused(&["--tls-client-ca-file=/ca.pem"]));
        // Positive control: the pair, with or without a client CA, parses.
        assert!(!refused(&["--tls-cert-file=/c.pem", "--tls-key-file=/k.pem"]));
        assert!(!refused(&["--tls-cert-file=/c.pem", "--tls-key-file=/k.pem", "--tls-client-ca-file=/ca.pem"]));
    }

    #[test]
    fn debug_of_the_settings_never_shows_a_secret() {
        let secrets = ["app-password", "owner-password", "redis-password", "platform-token-value"];
        let args = serve(&[
            "--database-url=postgres://tenantd_app:app-password@db/app",
            "--migration-database-url=postgres://owner:owner-password@db/app",
            "--redis-url=redis://:redis-password@cache:6379",
            "--platform-token=platform-token-value",
        ]);
        let args_debug = format!("{args:?}");
        let config = Config::from(args);
        let config_debug = format!("{config:?}");
        let pretty_debug = format!("{config:#?}");
        // Positive control: the secrets are in there, and the Debug output shows the other fields.
        assert!(config.database.url.expose_secret().contains("app-password"));
        assert!(config_debug.contains("listen_addr") && config_debug.contains("REDACTED"), "{config_debug}");
        for shown in [&args_debug, &config_debug, &pretty_debug] {
            for secret in secrets {
                assert!(!shown.contains(secret), "{secret} is in {shown}");
            }
        }
    }

    /// Every argument of `command` and its subcommands, with the usage line of its command.
    fn visit(command: &mut clap::Command, check: &mut impl FnMut(&clap::Command, &str)) {
        let usage = command.render_usage().to_string();
        check(command, &usage);
        for subcommand in command.get_subcommands_mut() {
            visit(subcommand, check);
        }
    }

    #[test]
    fn usage_lines_show_only_flags_that_are_required() {
        let mut root = Cli::command();
        root.build();
        let mut shown = Vec::new();
        visit(&mut root, &mut |command, usage| {
            let flags = usage.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).filter(|w| w.starts_with("--"));
            for flag in flags {
                let long = flag.trim_start_matches("--");
                let argument = command.get_arguments().find(|argument| argument.get_long() == Some(long));
                let argument = argument.unwrap_or_else(|| panic!("{usage}: no argument --{long}"));
                let in_required_group = command
                    .get_groups()
                    .filter(|group| group.is_required_set())
                    .any(|group| group.get_args().any(|id| id == argument.get_id()));
                assert!(
                    argument.is_required_set() || in_required_group,
                    "optional --{long} shown as required: {usage}"
                );
                // A switch's implicit `false` is not a default a user could rely on.
                let has_default = argument.get_action().takes_values() && !argument.get_default_values().is_empty();
                assert!(!has_default, "--{long} has a default: {usage}");
                shown.push(format!("{} --{long}", command.get_name()));
            }
        });
        // Positive control: the required flags are found.
        assert!(shown.contains(&"serve --database-url".to_owned()), "{shown:?}");
        assert!(!shown.contains(&"serve --platform-token".to_owned()), "the bootstrap token is optional: {shown:?}");
        assert!(!shown.contains(&"serve --listen-addr".to_owned()), "{shown:?}");
    }

    #[test]
    fn help_states_the_unit_of_every_duration_and_size() {
        let mut root = Cli::command();
        root.build();
        let mut checked = 0;
        visit(&mut root, &mut |command, _| {
            for argument in command.get_arguments() {
                // A flag named like a duration takes milliseconds and says so, with or without a variable.
                let long = argument.get_long().unwrap_or_default();
                let duration_words = ["timeout", "interval", "ttl", "grace", "predrain", "age", "flush", "keepalive"];
                if duration_words.iter().any(|word| long.split('-').any(|part| part == *word)) {
                    let help = argument.get_help().map(ToString::to_string).unwrap_or_default();
                    assert!(help.contains("in milliseconds"), "--{long}: {help:?} does not state its unit");
                }
                let Some(variable) = argument.get_env().and_then(|name| name.to_str()) else { continue };
                let help = argument.get_help().map(ToString::to_string).unwrap_or_default();
                let unit = if variable.ends_with("_MS") {
                    assert_eq!(argument.get_value_names(), Some(&["MILLISECONDS".into()][..]), "{variable}");
                    "in milliseconds"
                } else if variable.ends_with("_BYTES") {
                    "in bytes"
                } else {
                    continue;
                };
                assert!(help.contains(unit), "{variable}: {help:?} does not say {unit:?}");
                checked += 1;
            }
        });
        // 21 durations and 3 sizes.
        assert_eq!(checked, 24);
    }

    #[test]
    fn archive_signing_keys_parse_into_the_config_and_a_bad_one_stops_without_printing_it() {
        let secret = "c2lnbmluZyBrZXkgb25lIGZvciB0ZW5hbnRkIGFyY2hpdmVz";
        let url = "--database-url=postgres://app@db/app";
        let config = Config::from(serve(&[url, &format!("--archive-signing-keys=k2:{secret},k1:{secret}")]));
        let keys = &config.operations.archive_signing_keys;
        assert_eq!(keys.signing().map(|key| key.id()), Some("k2"));
        assert!(keys.get("k1").is_some());
        assert!(Config::from(serve(&[url])).operations.archive_signing_keys.is_empty(), "unset: no keys");

        let duplicate = format!("--archive-signing-keys=k1:{secret},k1:{secret}");
        let error = Cli::try_parse_from(["tenantd", "serve", url, &duplicate]).expect_err("a duplicate id").to_string();
        assert!(error.contains("--archive-signing-keys") && error.contains("appears twice"), "{error}");
        assert!(!error.contains(secret), "the error does not print the secret: {error}");
    }
}
