//! Command line and environment: every setting is a flag and a `TENANTD_*` variable.
//!
//! This is the only place (with `main.rs` and [`crate::client::args`]) that knows clap. `tenantd
//! serve` parses into [`ServeArgs`], which converts into the plain [`Config`] the server is built
//! from; nothing else reads [`ServeArgs`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::client::args::{EventsArgs, HealthArgs, KeysArgs, ResolveArgs, TenantsArgs};
use crate::config::{
    Config, ConnectionConfig, DatabaseConfig, EventsConfig, RedisConfig, ServerLimits, ShutdownConfig,
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
    /// Check a server's grpc.health.v1 status: exit 0 if SERVING, 1 if not, 2 if unreachable.
    Health(HealthArgs),
    /// Manage tenants through the control-plane API.
    Tenants(TenantsArgs),
    /// Manage a tenant's API keys.
    Keys(KeysArgs),
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
    /// PostgreSQL URL of a role that may create roles and own tables.
    #[arg(long, env = "TENANTD_MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: SecretString,
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
    /// Apply pending migrations before serving.
    #[arg(long, env = "TENANTD_MIGRATE", default_value_t = false)]
    pub migrate: bool,
    /// Redis URL for shared caches; tenantd keeps serving without it.
    #[arg(long, env = "TENANTD_REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: SecretString,
    /// Bearer token of platform callers (control plane, and data plane with `x-tenant-*`).
    #[arg(long, env = "TENANTD_PLATFORM_TOKEN", hide_env_values = true)]
    pub platform_token: SecretString,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`); off unless set.
    #[arg(long, env = "TENANTD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
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
}

/// Parses a whole number of milliseconds, the unit of every `*_MS` setting.
fn parse_millis(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("`{value}` is not a whole number of milliseconds"))
}

impl From<ServeArgs> for Config {
    fn from(args: ServeArgs) -> Self {
        Self {
            listen_addr: args.listen_addr,
            metrics_addr: args.metrics_addr,
            platform_token: args.platform_token,
            database: DatabaseConfig {
                url: args.database_url,
                migration_url: args.migration_database_url,
                migrate: args.migrate,
                pool_size: args.db_pool_size,
                acquire_timeout: args.db_acquire_timeout,
            },
            redis: RedisConfig {
                url: args.redis_url,
                pool_size: args.redis_pool_size,
                operation_timeout: args.redis_timeout,
            },
            tenant_cache_ttl: args.tenant_cache_ttl,
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
            events: EventsConfig {
                retention: args.event_retention,
                poll_interval: args.event_poll,
                watcher_buffer: args.event_watcher_buffer.max(1),
                slow_watcher_timeout: args.event_slow_watcher,
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
        ]));
        let millis = Duration::from_millis;
        assert_eq!(config.listen_addr, "127.0.0.1:1001".parse().expect("address"));
        assert_eq!(config.metrics_addr, Some("127.0.0.1:1002".parse().expect("address")));
        assert_eq!(config.platform_token.expose_secret(), "token-1");
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
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = Config::from(serve(&["--database-url=postgres://app@db/app", "--platform-token=token"]));
        assert_eq!(config.listen_addr, "0.0.0.0:50051".parse().expect("address"));
        assert_eq!(config.metrics_addr, None);
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
        assert!(shown.contains(&"serve --platform-token".to_owned()), "{shown:?}");
        assert!(!shown.contains(&"serve --listen-addr".to_owned()), "{shown:?}");
    }

    #[test]
    fn help_states_the_unit_of_every_duration_and_size() {
        let mut root = Cli::command();
        root.build();
        let mut checked = 0;
        visit(&mut root, &mut |command, _| {
            for argument in command.get_arguments() {
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
        // 16 durations and 3 sizes.
        assert_eq!(checked, 19);
    }
}
