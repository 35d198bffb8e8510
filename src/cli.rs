//! Command line and environment: every setting is a flag and a `TENANTD_*` variable.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::args::{HealthArgs, KeysArgs, ResolveArgs, TenantsArgs};

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
    /// Check a server's grpc.health.v1 status: exit 0 if SERVING, 1 if not, 2 if unreachable.
    Health(HealthArgs),
    /// Manage tenants through the control-plane API.
    Tenants(TenantsArgs),
    /// Manage a tenant's API keys.
    Keys(KeysArgs),
    /// Show the tenant named by an id, slug, domain, channel binding or API key.
    Resolve(ResolveArgs),
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A string that is never printed: `Debug` shows `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(value))
    }
}

/// Settings of `tenantd migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL of a role that may create roles and own tables.
    #[arg(long, env = "TENANTD_MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: Secret,
}

/// Settings of `tenantd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the gRPC server listens on; port 0 picks a free port.
    #[arg(long, env = "TENANTD_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,
    /// PostgreSQL URL of the app role (NOSUPERUSER, NOBYPASSRLS, owns nothing).
    #[arg(long, env = "TENANTD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// PostgreSQL URL of the migration role; required with `--migrate`.
    #[arg(long, env = "TENANTD_MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: Option<Secret>,
    /// Apply pending migrations before serving.
    #[arg(long, env = "TENANTD_MIGRATE", default_value_t = false)]
    pub migrate: bool,
    /// Redis URL for shared caches; tenantd keeps serving without it.
    #[arg(long, env = "TENANTD_REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: Secret,
    /// Bearer token of platform callers (control plane, and data plane with `x-tenant-*`).
    #[arg(long, env = "TENANTD_PLATFORM_TOKEN", hide_env_values = true)]
    pub platform_token: Secret,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`); off unless set.
    #[arg(long, env = "TENANTD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Maximum PostgreSQL connections in the pool.
    #[arg(long, env = "TENANTD_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// How long a request waits for a pooled connection before failing with UNAVAILABLE.
    #[arg(long, env = "TENANTD_DB_ACQUIRE_TIMEOUT_MS", default_value = "2000", value_parser = parse_millis)]
    pub db_acquire_timeout: Millis,
    /// Maximum Redis connections in the pool.
    #[arg(long, env = "TENANTD_REDIS_POOL_SIZE", default_value_t = 8)]
    pub redis_pool_size: u32,
    /// Timeout of one Redis operation; past it the cache is skipped for that request.
    #[arg(long, env = "TENANTD_REDIS_TIMEOUT_MS", default_value = "250", value_parser = parse_millis)]
    pub redis_timeout: Millis,
    /// How long a tenant's resolved state may be cached. Bounds staleness when an
    /// invalidation is lost (for example while Redis is down).
    #[arg(long, env = "TENANTD_TENANT_CACHE_TTL_MS", default_value = "30000", value_parser = parse_millis)]
    pub tenant_cache_ttl: Millis,
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
    /// Server-side deadline of every RPC; a client's shorter `grpc-timeout` wins.
    #[arg(long, env = "TENANTD_RPC_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub rpc_timeout: Millis,
    /// Interval of HTTP/2 keepalive pings to idle clients.
    #[arg(long, env = "TENANTD_HTTP2_KEEPALIVE_INTERVAL_MS", default_value = "30000", value_parser = parse_millis)]
    pub http2_keepalive_interval: Millis,
    /// How long to wait for a keepalive ping's answer before closing the connection.
    #[arg(long, env = "TENANTD_HTTP2_KEEPALIVE_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub http2_keepalive_timeout: Millis,
    /// TCP keepalive idle time of accepted connections.
    #[arg(long, env = "TENANTD_TCP_KEEPALIVE_MS", default_value = "60000", value_parser = parse_millis)]
    pub tcp_keepalive: Millis,
    /// Connections older than this are sent GOAWAY, so clients rebalance across replicas.
    #[arg(long, env = "TENANTD_MAX_CONNECTION_AGE_MS", default_value = "1800000", value_parser = parse_millis)]
    pub max_connection_age: Millis,
    /// How long a connection past its maximum age may finish in-flight RPCs.
    #[arg(long, env = "TENANTD_MAX_CONNECTION_AGE_GRACE_MS", default_value = "30000", value_parser = parse_millis)]
    pub max_connection_age_grace: Millis,
    /// How often usage bookkeeping is written, in batches outside requests: API keys'
    /// `last_used_time` (PostgreSQL) and per-tenant request counts (Redis).
    #[arg(long, env = "TENANTD_USAGE_FLUSH_MS", default_value = "5000", value_parser = parse_millis)]
    pub usage_flush: Millis,
    /// How often the health task probes PostgreSQL and Redis.
    #[arg(long, env = "TENANTD_HEALTH_INTERVAL_MS", default_value = "1000", value_parser = parse_millis)]
    pub health_interval: Millis,
    /// After SIGTERM, how long readiness reports NOT_SERVING before the server stops
    /// accepting work (Kubernetes removes endpoints concurrently with SIGTERM).
    #[arg(long, env = "TENANTD_SHUTDOWN_PREDRAIN_MS", default_value = "0", value_parser = parse_millis)]
    pub shutdown_predrain: Millis,
    /// Upper bound on draining in-flight RPCs after the server stops accepting work.
    #[arg(long, env = "TENANTD_SHUTDOWN_GRACE_MS", default_value = "20000", value_parser = parse_millis)]
    pub shutdown_grace: Millis,
}

/// A duration given in whole milliseconds on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0.as_millis())
    }
}

impl From<u64> for Millis {
    fn from(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }
}

fn parse_millis(value: &str) -> Result<Millis, String> {
    value.parse::<u64>().map(Millis::from).map_err(|_| format!("`{value}` is not a whole number of milliseconds"))
}
