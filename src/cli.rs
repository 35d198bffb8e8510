//! Command line and environment: every setting is a flag and a `TENANTD_*` variable.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// How often API key `last_used_time` is written (in batches, outside requests).
    #[arg(long, env = "TENANTD_KEY_USAGE_FLUSH_MS", default_value = "5000", value_parser = parse_millis)]
    pub key_usage_flush: Millis,
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
