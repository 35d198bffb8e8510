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
//! The archive signing keys ([`ArchiveSigningKeys`]) are [`SecretSlice`]s the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
pub use secrecy::{ExposeSecret, SecretSlice, SecretString};

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
    /// The keys that sign exports and verify imports (decision 0022); empty: exports are
    /// unsigned and only unsigned archives import.
    pub archive_signing_keys: ArchiveSigningKeys,
}

/// The shortest signing key accepted, in bytes (the output size of SHA-256, as RFC 2104
/// recommends for HMAC-SHA256).
pub const MIN_SIGNING_KEY_BYTES: usize = 32;
/// The longest key id accepted.
pub const MAX_SIGNING_KEY_ID_CHARS: usize = 64;

/// The archive signing keys, in order: the first signs, every one verifies (so a key is
/// rotated by putting the new one first and keeping the old one until its archives are no
/// longer imported). `Debug` prints the ids only.
#[derive(Clone, Default)]
pub struct ArchiveSigningKeys {
    keys: Arc<[ArchiveSigningKey]>,
}

/// One signing key: an id, written into the archives it signs, and its secret.
#[derive(Clone)]
pub struct ArchiveSigningKey {
    id: String,
    secret: SecretSlice<u8>,
}

impl ArchiveSigningKey {
    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret's bytes, for the MAC only.
    pub fn secret(&self) -> &[u8] {
        self.secret.expose_secret()
    }
}

impl std::fmt::Debug for ArchiveSigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ArchiveSigningKey").field("id", &self.id).field("secret", &"[REDACTED]").finish()
    }
}

impl std::fmt::Debug for ArchiveSigningKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.keys.iter()).finish()
    }
}

impl ArchiveSigningKeys {
    /// Parses `id:base64secret,id:base64secret` (standard base64, padded): at least one key,
    /// ids of 1 to [`MAX_SIGNING_KEY_ID_CHARS`] ASCII letters, digits, `.`, `_` or `-`, each
    /// once, secrets of at least [`MIN_SIGNING_KEY_BYTES`] bytes. The error names the key by
    /// its position and id, never its secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<ArchiveSigningKey> = Vec::new();
        for (index, entry) in text.split(',').map(str::trim).enumerate() {
            let position = index + 1;
            let Some((id, secret)) = entry.split_once(':') else {
                return Err(format!("key {position} is not `id:base64secret`"));
            };
            let id = id.trim();
            let valid_id = !id.is_empty()
                && id.len() <= MAX_SIGNING_KEY_ID_CHARS
                && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
            if !valid_id {
                return Err(format!(
                    "key {position}: the id must be 1 to {MAX_SIGNING_KEY_ID_CHARS} letters, digits, `.`, `_` or `-`"
                ));
            }
            if keys.iter().any(|key| key.id == id) {
                return Err(format!("key {position}: the id {id:?} appears twice"));
            }
            let Ok(secret) = base64::engine::general_purpose::STANDARD.decode(secret.trim()) else {
                return Err(format!("key {position} ({id:?}): the secret is not standard base64"));
            };
            if secret.len() < MIN_SIGNING_KEY_BYTES {
                return Err(format!(
                    "key {position} ({id:?}): the secret is {} bytes; it must be at least {MIN_SIGNING_KEY_BYTES}",
                    secret.len()
                ));
            }
            keys.push(ArchiveSigningKey { id: id.to_owned(), secret: secret.into() });
        }
        Ok(Self { keys: keys.into() })
    }

    /// Whether there is no key (exports are unsigned, signed archives are refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that signs: the first.
    pub fn signing(&self) -> Option<&ArchiveSigningKey> {
        self.keys.first()
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&ArchiveSigningKey> {
        self.keys.iter().find(|key| key.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_ONE: &str = "c2lnbmluZyBrZXkgb25lIGZvciB0ZW5hbnRkIGFyY2hpdmVz";
    const SECRET_TWO: &str = "c2lnbmluZyBrZXkgdHdvIGZvciB0ZW5hbnRkIGFyY2hpdmVz";

    #[test]
    fn signing_keys_parse_in_order_and_their_debug_holds_no_secret() {
        let keys = ArchiveSigningKeys::parse(&format!("new:{SECRET_TWO}, old:{SECRET_ONE}")).expect("valid keys");
        assert_eq!(keys.signing().map(ArchiveSigningKey::id), Some("new"), "the first signs");
        assert_eq!(keys.get("old").map(ArchiveSigningKey::secret), Some(&b"signing key one for tenantd archives"[..]));
        let debug = format!("{keys:?}");
        assert!(debug.contains("new") && debug.contains("old"), "positive control: the ids show: {debug}");
        for secret in [SECRET_ONE, SECRET_TWO, "signing key", "115, 105"] {
            assert!(!debug.contains(secret), "{debug} holds {secret}");
        }
        assert!(debug.contains("[REDACTED]"), "{debug}");
    }

    #[test]
    fn bad_signing_keys_are_refused_with_a_reason_that_does_not_hold_the_secret() {
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 31]);
        for (text, expected) in [
            (format!("k1:{SECRET_ONE},k1:{SECRET_TWO}"), "appears twice"),
            ("k1:not base64!".to_owned(), "not standard base64"),
            (format!("k1:{short}"), "31 bytes"),
            (SECRET_ONE.to_owned(), "not `id:base64secret`"),
            (format!(":{SECRET_ONE}"), "the id must be"),
            (format!("k1:{SECRET_ONE},"), "key 2 is not"),
        ] {
            let error = ArchiveSigningKeys::parse(&text).expect_err(expected);
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains(SECRET_ONE) && !error.contains(&short), "{error}");
        }
        assert!(ArchiveSigningKeys::parse(&format!("k1:{SECRET_ONE}")).is_ok(), "positive control");
    }
}
