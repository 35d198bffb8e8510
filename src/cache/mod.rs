//! Redis: state shared across replicas. tenantd degrades without it and never fails
//! because of it: every operation has a timeout, an unavailable Redis is skipped (reads
//! miss, writes are dropped), and the health task brings it back when it answers again.
//!
//! One Redis server is reached through a bb8 pool of multiplexed connections (decision 0002);
//! a Redis Cluster through the redis crate's cluster client, one multiplexed connection that
//! routes each command by its key's slot and follows MOVED/ASK and failovers (decision 0017).
//! Every key comes from [`RedisKey`], whose tenant keys carry the tenant id as a hash tag, so
//! a command or script over several keys of one tenant stays on one slot. Pub/sub uses a
//! dedicated connection to one node (on a cluster, to the first seed node that answers):
//! a cluster broadcasts PUBLISH to every node, so a subscriber on any node hears all.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, aio::MultiplexedConnection};

mod keys;
mod script;

pub use keys::{INVALIDATION_CHANNEL, RedisKey};
pub use script::Script;

/// A pooled Redis connection that remembers whether it failed. A multiplexed connection
/// never reports itself broken, so a connection that lost its socket would stay in the pool
/// forever and Redis would never recover without a restart. The flag is shared with the
/// clones commands run on (see [`RedisCache::try_execute_single`]), so a failure on a
/// clone marks the pooled connection.
pub struct TrackedConnection {
    connection: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

/// The pool's manager: multiplexed connections of one client (with TLS for `rediss://`),
/// plus broken-connection tracking.
#[derive(Debug, Clone)]
pub struct TrackedManager {
    client: redis::Client,
}

impl bb8::ManageConnection for TrackedManager {
    type Connection = TrackedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let connection = self.client.get_multiplexed_async_connection().await?;
        Ok(TrackedConnection { connection, broken: Arc::default() })
    }

    async fn is_valid(&self, connection: &mut Self::Connection) -> Result<(), Self::Error> {
        let _: String = redis::cmd("PING").query_async(&mut connection.connection).await?;
        Ok(())
    }

    fn has_broken(&self, connection: &mut Self::Connection) -> bool {
        connection.broken.load(Ordering::Relaxed)
    }
}

/// A Redis client for `url`, with TLS for `rediss://`.
fn client(url: &str, tls_ca_file: Option<&Path>) -> anyhow::Result<redis::Client> {
    let invalid = |_| anyhow::anyhow!("TENANTD_REDIS_URL is not a valid Redis URL");
    let tls = url.starts_with("rediss://");
    anyhow::ensure!(
        !(tls && url.contains("#insecure")),
        "TENANTD_REDIS_URL asks for TLS without certificate verification (#insecure), which tenantd refuses"
    );
    match tls_ca_file {
        None => redis::Client::open(url).map_err(invalid),
        Some(path) => {
            anyhow::ensure!(tls, "TENANTD_REDIS_TLS_CA_FILE is set but TENANTD_REDIS_URL is not rediss://");
            // Parsed here so that a bad file is an error at start-up, naming it.
            crate::tls::roots_from_file(path, "the Redis CA file")?;
            let root_cert = crate::tls::read_file(path, "the Redis CA file")?;
            let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) };
            redis::Client::build_with_tls(url, certificates)
                .with_context(|| format!("building a Redis TLS client with {}", path.display()))
        }
    }
}

/// A Redis client that never fails a request.
#[derive(Clone)]
pub struct RedisCache {
    /// The nodes a subscription may use, tried in turn.
    subscribers: Vec<redis::Client>,
    backend: Backend,
    timeout: Duration,
    available: Arc<AtomicBool>,
}

/// Where commands go.
#[derive(Clone)]
enum Backend {
    /// One Redis server.
    Single(bb8::Pool<TrackedManager>),
    /// A Redis Cluster.
    Cluster(Arc<ClusterBackend>),
}

/// The cluster client and its one multiplexed connection, made on first use and again after
/// it failed.
struct ClusterBackend {
    client: redis::cluster::ClusterClient,
    connection: tokio::sync::Mutex<Option<ClusterConnection>>,
}

impl RedisCache {
    /// Builds the pool without connecting. Fails only on a malformed URL or an unusable CA
    /// file. `rediss://` connects with TLS and verifies the server's certificate against
    /// `tls_ca_file`, or the system's CA certificates without it; verification cannot be
    /// turned off (`#insecure` is refused).
    pub fn new(url: &str, tls_ca_file: Option<&Path>, pool_size: u32, timeout: Duration) -> anyhow::Result<Self> {
        let client = client(url, tls_ca_file)?;
        let pool = bb8::Pool::builder()
            .max_size(pool_size)
            .min_idle(None)
            .connection_timeout(timeout)
            .test_on_check_out(false)
            .build_unchecked(TrackedManager { client: client.clone() });
        Ok(Self { subscribers: vec![client], backend: Backend::Single(pool), timeout, available: Arc::default() })
    }

    /// A client of the Redis Cluster whose seed nodes `urls` lists (comma-separated
    /// `redis://host:port` URLs, each of a cluster node), built without connecting. TLS
    /// (`rediss://`) is not supported with a cluster yet.
    pub fn cluster(urls: &str, timeout: Duration) -> anyhow::Result<Self> {
        let urls: Vec<&str> = urls.split(',').map(str::trim).filter(|url| !url.is_empty()).collect();
        anyhow::ensure!(!urls.is_empty(), "TENANTD_REDIS_URL lists no cluster node");
        anyhow::ensure!(
            urls.iter().all(|url| url.starts_with("redis://")),
            "with TENANTD_REDIS_CLUSTER, TENANTD_REDIS_URL is a comma-separated list of redis:// URLs (no TLS yet)"
        );
        let subscribers = urls.iter().map(|url| client(url, None)).collect::<anyhow::Result<Vec<_>>>()?;
        let client = redis::cluster::ClusterClient::builder(urls.iter().copied())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(|_| anyhow::anyhow!("TENANTD_REDIS_URL is not a valid list of Redis URLs"))?;
        let backend = Backend::Cluster(Arc::new(ClusterBackend { client, connection: tokio::sync::Mutex::default() }));
        Ok(Self { subscribers, backend, timeout, available: Arc::default() })
    }

    /// Whether the last probe or operation succeeded. While false, operations are skipped.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Sends PING and records the outcome; the health task calls this.
    pub async fn probe(&self) -> bool {
        let healthy = self.execute(redis::cmd("PING")).await.is_some_and(|reply: String| reply == "PONG");
        self.available.store(healthy, Ordering::Relaxed);
        healthy
    }

    /// Reads a string value; `None` on a miss or when Redis is unavailable.
    pub async fn get(&self, key: &RedisKey) -> Option<String> {
        if !self.is_available() {
            return None;
        }
        self.execute::<Option<String>>(redis::Cmd::get(key.as_str())).await.flatten()
    }

    /// Writes a string value with a time to live; dropped when Redis is unavailable. Returns
    /// whether Redis took it.
    pub async fn set(&self, key: &RedisKey, value: &str, ttl: Duration) -> bool {
        if !self.is_available() {
            return false;
        }
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut command = redis::cmd("SET");
        command.arg(key.as_str()).arg(value).arg("PX").arg(millis);
        self.execute::<()>(command).await.is_some()
    }

    /// Deletes a key; dropped when Redis is unavailable (cached values then expire by TTL).
    pub async fn delete(&self, key: &RedisKey) {
        if !self.is_available() {
            return;
        }
        let _: Option<()> = self.execute(redis::Cmd::del(key.as_str())).await;
    }

    /// The timeout of one operation.
    pub fn operation_timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs any command; `None` when Redis is unavailable or the command fails. Keys in the
    /// command must come from [`RedisKey`].
    pub async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Option<T> {
        if !self.is_available() {
            return None;
        }
        self.execute(command).await
    }

    /// Runs a Lua script on `keys` (all of one tenant, so one slot) with `args`: EVALSHA, and
    /// EVAL when the server does not know the script (after a restart or a failover), which
    /// also caches it there. `None` when Redis is unavailable or the script fails.
    pub async fn eval<T: redis::FromRedisValue>(&self, script: &Script, keys: &[RedisKey], args: &[u64]) -> Option<T> {
        if !self.is_available() {
            return None;
        }
        let span = crate::telemetry::traces::child_span("redis", || {
            vec![
                opentelemetry::KeyValue::new("db.system.name", "redis"),
                opentelemetry::KeyValue::new("db.operation.name", "EVALSHA"),
            ]
        });
        let outcome = async {
            if !script.is_learnt() {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(script.source());
                script.learn(self.try_execute::<String>(load).await?);
            }
            match self.try_execute(script.command(keys, args, script::Invocation::BySha)).await {
                Err(Failure::Redis(error))
                    if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.try_execute(script.command(keys, args, script::Invocation::BySource)).await
                }
                other => other,
            }
        };
        match span.end_with(outcome.await) {
            Ok(value) => Some(value),
            Err(failure) => self.failed(&failure),
        }
    }

    /// Deletes every key of `tenant_id` (`t:{<id>}:*`, from [`RedisKey::for_tenant`]) with
    /// SCAN MATCH and DEL, a batch at a time: on the one server, or on a cluster on the master
    /// that owns the tenant's slot (the id is the keys' hash tag, so they all live there).
    /// Returns how many keys were deleted; `None` when Redis is unavailable or failed part-way
    /// (a repeat deletes the rest).
    pub async fn delete_tenant_keys(&self, tenant_id: uuid::Uuid) -> Option<u64> {
        if !self.is_available() {
            return None;
        }
        let pattern = RedisKey::for_tenant(tenant_id, &["*"]);
        let (mut cursor, mut deleted) = (0_u64, 0_u64);
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(pattern.as_str()).arg("COUNT").arg(1000);
            let (next, keys): (u64, Vec<String>) = self.execute_on_slot_of(scan, &pattern).await?;
            if !keys.is_empty() {
                let mut delete = redis::cmd("DEL");
                for key in &keys {
                    delete.arg(key);
                }
                deleted += self.execute_on_slot_of::<u64>(delete, &pattern).await?;
            }
            if next == 0 {
                return Some(deleted);
            }
            cursor = next;
        }
    }

    /// Runs `command` on the server that holds `key` (on a cluster, its slot's master: for
    /// commands such as SCAN that name no key themselves).
    async fn execute_on_slot_of<T: redis::FromRedisValue>(&self, command: redis::Cmd, key: &RedisKey) -> Option<T> {
        let cluster = match &self.backend {
            Backend::Single(_) => return self.execute(command).await,
            Backend::Cluster(cluster) => cluster,
        };
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
        let route = Route::with_slot(Slot::for_key(key.as_str()), SlotAddr::Master);
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
        let connect = async {
            let mut held = cluster.connection.lock().await;
            if let Some(connection) = held.as_ref() {
                return Ok(connection.clone());
            }
            let connection = cluster.client.get_async_connection().await?;
            held.replace(connection.clone());
            Ok::<_, RedisError>(connection)
        };
        let outcome = tokio::time::timeout(self.timeout, async {
            let mut connection = connect.await?;
            connection.route_command(command, routing).await
        })
        .await;
        match outcome {
            Ok(Ok(value)) => match T::from_redis_value(value) {
                Ok(value) => Some(value),
                Err(error) => self.failed(&error.to_string()),
            },
            Ok(Err(error)) => self.failed(&error),
            Err(_elapsed) => self.failed(&"timed out"),
        }
    }

    /// Announces on `channel`; dropped when Redis is unavailable.
    pub async fn publish(&self, channel: &str, message: &str) {
        if !self.is_available() {
            return;
        }
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(message);
        let _: Option<i64> = self.execute(command).await;
    }

    /// Subscribes to `channel` on a dedicated connection (pub/sub cannot share one), to the
    /// first node that answers.
    pub async fn subscribe(&self, channel: &str) -> Option<redis::aio::PubSubStream> {
        let mut last_error = String::from("no node");
        for client in &self.subscribers {
            let connect = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok::<_, RedisError>(pubsub.into_on_message())
            };
            match tokio::time::timeout(self.timeout, connect).await {
                Ok(Ok(stream)) => return Some(stream),
                Ok(Err(error)) => last_error = error.to_string(),
                Err(_elapsed) => last_error = "timed out subscribing".to_owned(),
            }
        }
        self.failed(&last_error)
    }

    /// Runs `command` (a child span of the request's, when it is traced).
    async fn execute<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Option<T> {
        let span = crate::telemetry::traces::child_span("redis", || {
            let operation = match command.args_iter().next() {
                Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).into_owned(),
                _ => String::new(),
            };
            vec![
                opentelemetry::KeyValue::new("db.system.name", "redis"),
                opentelemetry::KeyValue::new("db.operation.name", operation),
            ]
        });
        span.end_with(self.execute_untraced(command).await.ok_or(())).ok()
    }

    async fn execute_untraced<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Option<T> {
        match self.try_execute(command).await {
            Ok(value) => Some(value),
            Err(failure) => self.failed(&failure),
        }
    }

    /// Runs `command` on a pooled connection, marking the connection broken when it lost its
    /// socket or timed out; does not touch the availability flag.
    async fn try_execute<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, Failure> {
        let cluster = match &self.backend {
            Backend::Single(pool) => return self.try_execute_single(pool, command).await,
            Backend::Cluster(cluster) => cluster,
        };
        let mut connection = {
            let mut held = cluster.connection.lock().await;
            match held.as_ref() {
                Some(connection) => connection.clone(),
                None => {
                    let connect = cluster.client.get_async_connection();
                    let connection = match tokio::time::timeout(self.timeout, connect).await {
                        Ok(Ok(connection)) => connection,
                        Ok(Err(error)) => return Err(Failure::Redis(error)),
                        Err(_elapsed) => return Err(Failure::TimedOut),
                    };
                    held.replace(connection.clone());
                    connection
                }
            }
        };
        let outcome = tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await;
        let failure = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error))
                if !(error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error()) =>
            {
                return Err(Failure::Redis(error));
            }
            Ok(Err(error)) => Failure::Redis(error),
            Err(_elapsed) => Failure::TimedOut,
        };
        // The cluster client reconnects to nodes itself; a fresh one also refreshes the slots.
        cluster.connection.lock().await.take();
        Err(failure)
    }

    /// Runs `command` on a connection of the pool to the one server. The pooled connection is
    /// held only to clone it (a multiplexed connection's clone shares its socket and
    /// pipelines): the command runs on the clone after the checkout is returned, so
    /// concurrent requests share connections instead of queueing for a free one (with 8
    /// pooled connections and more requests in flight, most of a rate-limited request's time
    /// went to waiting for a checkout).
    async fn try_execute_single<T: redis::FromRedisValue>(
        &self,
        pool: &bb8::Pool<TrackedManager>,
        command: redis::Cmd,
    ) -> Result<T, Failure> {
        let mut attempts = pool.state().connections + 1;
        let (mut connection, broken) = loop {
            let pooled = pool.get().await.map_err(|error| Failure::Pool(error.to_string()))?;
            if !pooled.broken.load(Ordering::Relaxed) {
                break (pooled.connection.clone(), pooled.broken.clone());
            }
            // Marked by a clone after it was returned: dropping it here discards it.
            attempts -= 1;
            if attempts == 0 {
                return Err(Failure::Pool("every pooled connection is broken".to_owned()));
            }
        };
        let outcome = tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error() {
                    broken.store(true, Ordering::Relaxed);
                }
                Err(Failure::Redis(error))
            }
            Err(_elapsed) => {
                // The reply may still arrive on this multiplexed connection; do not reuse it.
                broken.store(true, Ordering::Relaxed);
                Err(Failure::TimedOut)
            }
        }
    }

    fn failed<T>(&self, error: &dyn std::fmt::Display) -> Option<T> {
        if self.available.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %error, "redis unavailable; serving without the cache");
        }
        None
    }
}

/// Why one Redis operation failed (for the log; never sent to clients).
enum Failure {
    Pool(String),
    Redis(RedisError),
    TimedOut,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pool(error) => write!(formatter, "{error}"),
            Self::Redis(error) => write!(formatter, "{error}"),
            Self::TimedOut => write!(formatter, "timed out"),
        }
    }
}
