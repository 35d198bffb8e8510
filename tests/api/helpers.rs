//! Test harness: a fresh database per test, migrated, with the real server on port 0 and
//! typed tonic clients. PostgreSQL and Redis are real; nothing is mocked.
//!
//! Settings (all optional): `TENANTD_TEST_PG_HOST` (127.0.0.1), `TENANTD_TEST_PG_PORT`
//! (5432), `TENANTD_TEST_PG_ADMIN` (postgres: a superuser reachable with trust or
//! `PGPASSWORD`), `TENANTD_TEST_REDIS_URL` (redis://127.0.0.1:6379), `TENANTD_TEST_REDIS_CLUSTER`
//! (set: the URL is a comma-separated list of Redis Cluster nodes; scripts/redis-cluster-tests.sh).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use tenantd::cli::{Cli, Command};
use tenantd::config::Config;
use tenantd::proto::audit_service_client::AuditServiceClient;
use tenantd::proto::document_service_client::DocumentServiceClient;
use tenantd::proto::event_service_client::EventServiceClient;
use tenantd::proto::setting_service_client::SettingServiceClient;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::user_service_client::UserServiceClient;
use tenantd::proto::{self, CreateTenantRequest, CreateUserRequest, Tenant, User};
use tenantd::startup::Application;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const PLATFORM_TOKEN: &str = "test-platform-token";

pub fn pg_host() -> String {
    std::env::var("TENANTD_TEST_PG_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned())
}

pub fn pg_port() -> u16 {
    std::env::var("TENANTD_TEST_PG_PORT").ok().and_then(|port| port.parse().ok()).unwrap_or(5432)
}

pub fn pg_admin() -> String {
    std::env::var("TENANTD_TEST_PG_ADMIN").unwrap_or_else(|_| "postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("TENANTD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A PostgreSQL URL for `user` on `database` of the test cluster.
pub fn database_url(user: &str, database: &str) -> String {
    let password = std::env::var("PGPASSWORD").ok().filter(|_| user != "tenantd_app");
    match password {
        Some(password) => format!("postgres://{user}:{password}@{}:{}/{database}", pg_host(), pg_port()),
        None => format!("postgres://{user}@{}:{}/{database}", pg_host(), pg_port()),
    }
}

/// A raw tokio-postgres client, for SQL-level tests and set-up.
pub async fn connect(user: &str, database: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(user, database), tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A fresh, empty database (not migrated).
pub async fn create_database() -> String {
    let name = format!("tenantd_test_{}", uuid::Uuid::new_v4().simple());
    let admin = connect(&pg_admin(), "postgres").await;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    name
}

/// Drops a test database, closing any connection still open to it.
pub async fn drop_database(name: &str) {
    let admin = connect(&pg_admin(), "postgres").await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.expect("drop test database");
}

/// Runs the embedded migrations on `database` as the admin role. Roles are cluster-wide,
/// so migrations of concurrent tests are serialised with a cluster-wide advisory lock
/// held on the `postgres` database.
pub async fn migrate(database: &str) {
    let admin = connect(&pg_admin(), "postgres").await;
    admin.execute("SELECT pg_advisory_lock(7345001)", &[]).await.expect("advisory lock");
    let result = tenantd::db::migrations::run_pending(&database_url(&pg_admin(), database)).await;
    admin.execute("SELECT pg_advisory_unlock(7345001)", &[]).await.expect("advisory unlock");
    result.expect("migrations run");
}

/// Server settings for a test: the binary's own defaults (parsed by clap and converted as
/// `main` converts them, so there is one source of truth), with port 0, fast health probes
/// and a short grace period.
pub fn test_config(database: &str) -> Config {
    let cli = Cli::try_parse_from([
        "tenantd",
        "serve",
        "--listen-addr=127.0.0.1:0",
        &format!("--database-url={}", database_url("tenantd_app", database)),
        &format!("--provisioning-database-url={}", database_url("tenantd_provisioner", database)),
        &format!("--redis-url={}", redis_url()),
        &format!("--platform-token={PLATFORM_TOKEN}"),
        "--db-pool-size=8",
        "--redis-pool-size=4",
        "--usage-flush=200",
        "--health-interval=100",
        "--shutdown-predrain=0",
        "--shutdown-grace=5000",
        // The operation worker looks for work only when woken (a move started on this server)
        // and at start, so its claims do not show in tests that count queries or checkouts;
        // tests of operations set a short poll.
        "--operation-poll=3600000",
    ])
    .expect("test settings parse");
    let Command::Serve(args) = cli.command else { unreachable!("parsed `serve`") };
    let mut config = Config::from(*args);
    config.redis.cluster = std::env::var_os("TENANTD_TEST_REDIS_CLUSTER").is_some();
    config
}

/// A running server and its clients.
pub struct TestApp {
    pub database: String,
    pub port: u16,
    pub metrics_port: Option<u16>,
    pub pool: tenantd::db::PgPool,
    pub channel: Channel,
    pub tenants: TenantServiceClient<InterceptedService<Channel, Metadata>>,
    pub shutdown: CancellationToken,
    pub server: JoinHandle<anyhow::Result<()>>,
    pub events: std::sync::Arc<tenantd::domain::events::EventHub>,
    /// The isolation tier of the tenants [`TestApp::create_tenant`] creates (the data-plane
    /// suites run once pooled and once in the schema tier: tests/api/schema_tier.rs).
    pub tier: IsolationTier,
}

/// Server logs go to the test's captured output (shown when a test fails); the level
/// comes from `RUST_LOG`, default `warn`.
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// A fresh migrated database and a server that reports ready.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_in(IsolationTier::Pooled, configure).await
}

/// Like [`spawn_app_with`], creating tenants in `tier`.
pub async fn spawn_app_in(tier: IsolationTier, configure: impl FnOnce(&mut Config)) -> TestApp {
    let database = create_database().await;
    migrate(&database).await;
    let mut config = test_config(&database);
    configure(&mut config);
    let mut app = start(database, config).await;
    app.tier = tier;
    app.wait_for_status("", ServingStatus::Serving).await;
    app
}

/// Short operation leases and polls, so that an operation a killed replica held is claimed
/// again quickly.
pub fn fast_operations(config: &mut Config) {
    config.operations.lease = Duration::from_millis(900);
    config.operations.poll_interval = Duration::from_millis(100);
}

/// An operation's metadata (`tenantd.v1.OperationMetadata`).
pub fn operation_metadata(operation: &tenantd::proto::longrunning::Operation) -> proto::OperationMetadata {
    use prost::Message;
    let any = operation.metadata.as_ref().expect("metadata");
    assert_eq!(any.type_url, "type.googleapis.com/tenantd.v1.OperationMetadata");
    proto::OperationMetadata::decode(any.value.as_slice()).expect("metadata decodes")
}

/// Starts another replica on `database` (configured by `configure` over the test
/// configuration) and waits until it serves.
pub async fn replica(database: String, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(&database);
    configure(&mut config);
    let replica = start(database, config).await;
    replica.wait_for_status("", tonic_health::pb::health_check_response::ServingStatus::Serving).await;
    replica
}

/// Starts the server as production does, without waiting for readiness.
pub async fn start(database: String, config: Config) -> TestApp {
    init_logging();
    let application = Application::build(config).await.expect("build application");
    let pool = application.database_pool();
    let port = application.port();
    let metrics_port = application.metrics_port();
    let events = application.event_hub();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run_until(shutdown.clone().cancelled_owned()));
    let channel = Channel::from_shared(format!("http://{address}")).expect("uri").connect_lazy();
    let tenants = TenantServiceClient::with_interceptor(channel.clone(), Metadata::platform());
    let tier = IsolationTier::Pooled;
    TestApp { database, port, metrics_port, pool, channel, tenants, shutdown, server, events, tier }
}

impl TestApp {
    /// A settings client acting for `tenant_id` with the platform token.
    pub fn settings(&self, tenant_id: &str) -> SettingServiceClient<InterceptedService<Channel, Metadata>> {
        SettingServiceClient::with_interceptor(self.channel.clone(), Metadata::platform().tenant_id(tenant_id))
    }

    /// A data-plane client acting for `tenant_id` with the platform token.
    pub fn users(&self, tenant_id: &str) -> UserServiceClient<InterceptedService<Channel, Metadata>> {
        UserServiceClient::with_interceptor(self.channel.clone(), Metadata::platform().tenant_id(tenant_id))
    }

    /// A data-plane client authenticated with a tenant API key (no tenant metadata).
    pub fn users_with_key(&self, key: &str) -> UserServiceClient<InterceptedService<Channel, Metadata>> {
        self.users_with(Metadata::bearer(key))
    }

    /// A document client acting for `tenant_id` with the platform token.
    pub fn documents(&self, tenant_id: &str) -> DocumentServiceClient<InterceptedService<Channel, Metadata>> {
        DocumentServiceClient::with_interceptor(self.channel.clone(), Metadata::platform().tenant_id(tenant_id))
    }

    /// An audit client with exactly the metadata given.
    pub fn audit_with(&self, metadata: Metadata) -> AuditServiceClient<InterceptedService<Channel, Metadata>> {
        AuditServiceClient::with_interceptor(self.channel.clone(), metadata)
    }

    /// An event client with exactly the metadata given.
    pub fn events_with(&self, metadata: Metadata) -> EventServiceClient<InterceptedService<Channel, Metadata>> {
        EventServiceClient::with_interceptor(self.channel.clone(), metadata)
    }

    /// How many times requests have checked out a database connection so far.
    pub fn pool_checkouts(&self) -> u64 {
        self.pool.state().statistics.get_started
    }

    /// Creates an API key for a tenant and returns (key id, secret).
    pub async fn create_api_key(&self, tenant_id: &str, scopes: &[ApiKeyScope]) -> (String, String) {
        let response = self
            .tenants
            .clone()
            .create_api_key(proto::CreateApiKeyRequest {
                tenant_id: tenant_id.to_owned(),
                api_key: Some(proto::ApiKey {
                    display_name: "test key".into(),
                    scopes: scopes.iter().map(|scope| *scope as i32).collect(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .expect("create api key")
            .into_inner();
        (response.api_key.expect("key").id, response.secret)
    }

    /// A data-plane client with exactly the metadata given.
    pub fn users_with(&self, metadata: Metadata) -> UserServiceClient<InterceptedService<Channel, Metadata>> {
        UserServiceClient::with_interceptor(self.channel.clone(), metadata)
    }

    /// A health client (no metadata, as Kubernetes probes send none).
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// The status `service` reports now.
    pub async fn status(&self, service: &str) -> ServingStatus {
        let response =
            self.health().check(HealthCheckRequest { service: service.to_owned() }).await.expect("health check");
        ServingStatus::try_from(response.into_inner().status).expect("known status")
    }

    /// Polls until `service` reports `expected`, for at most 10 s; returns how long it took.
    pub async fn wait_for_status(&self, service: &str, expected: ServingStatus) -> Duration {
        let started = Instant::now();
        loop {
            let current = self.health().check(HealthCheckRequest { service: service.to_owned() }).await;
            if current.is_ok_and(|response| response.into_inner().status == expected as i32) {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{service:?} never became {expected:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Creates an active tenant with `slug`, in this app's [`TestApp::tier`].
    pub async fn create_tenant(&self, slug: &str) -> Tenant {
        self.create_tenant_in(slug, self.tier).await
    }

    /// Creates an active tenant with `slug` in `tier`.
    pub async fn create_tenant_in(&self, slug: &str, tier: IsolationTier) -> Tenant {
        self.tenants
            .clone()
            .create_tenant(CreateTenantRequest {
                tenant: Some(Tenant {
                    slug: slug.to_owned(),
                    display_name: format!("Tenant {slug}"),
                    isolation_tier: tier as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("create tenant")
            .into_inner()
    }

    /// Creates a user with `email` in `tenant_id`.
    pub async fn create_user(&self, tenant_id: &str, email: &str) -> User {
        self.users(tenant_id)
            .create_user(CreateUserRequest {
                user: Some(User { email: email.to_owned(), ..Default::default() }),
                ..Default::default()
            })
            .await
            .expect("create user")
            .into_inner()
    }

    /// Deletes the tenant (a no-op if it is already deleted), purges it with PurgeTenant and
    /// waits (up to 60 s) for the purge operation to finish; returns the finished operation.
    pub async fn purge_tenant(&self, tenant_id: &str) -> tenantd::proto::longrunning::Operation {
        use tenantd::proto::longrunning::GetOperationRequest;
        use tenantd::proto::longrunning::operations_client::OperationsClient;
        let mut tenants = self.tenants.clone();
        let delete = proto::DeleteTenantRequest { id: tenant_id.to_owned(), etag: String::new() };
        if let Err(status) = tenants.delete_tenant(delete).await {
            assert_eq!(reason(&status), "TENANT_PURGING", "delete before the purge: {status:?}");
        }
        let operation = tenants
            .purge_tenant(proto::PurgeTenantRequest { id: tenant_id.to_owned() })
            .await
            .expect("purge tenant")
            .into_inner();
        let mut operations = OperationsClient::with_interceptor(self.channel.clone(), Metadata::platform());
        let started = Instant::now();
        loop {
            let current = operations
                .get_operation(GetOperationRequest { name: operation.name.clone() })
                .await
                .expect("get purge operation")
                .into_inner();
            if current.done {
                return current;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the purge did not finish in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server: drops its task without a graceful stop (no lease released, no
    /// connection closed politely); returns its database, for a replica to take over.
    pub async fn kill(self) -> String {
        self.server.abort();
        let _ = self.server.await;
        self.database
    }

    /// Stops the server, waits for it, and drops the test database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("server task").expect("server stopped cleanly");
        drop_database(&self.database).await;
    }
}

/// A unique slug for a test (slugs are global within a database, and tests share none).
pub fn unique_slug(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Metadata a test client attaches to every call.
#[derive(Clone, Default)]
pub struct Metadata {
    pairs: Vec<(&'static str, MetadataValue<tonic::metadata::Ascii>)>,
}

impl Metadata {
    /// No metadata at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// The platform bearer token.
    pub fn platform() -> Self {
        Self::bearer(PLATFORM_TOKEN)
    }

    /// `authorization: Bearer <credential>`.
    pub fn bearer(credential: &str) -> Self {
        Self::none().with("authorization", &format!("Bearer {credential}"))
    }

    /// Adds `x-tenant-id`.
    pub fn tenant_id(self, id: &str) -> Self {
        self.with("x-tenant-id", id)
    }

    /// Adds `x-tenant-slug`.
    pub fn tenant_slug(self, slug: &str) -> Self {
        self.with("x-tenant-slug", slug)
    }

    /// Adds any ASCII pair (repeat a key to send it twice).
    pub fn with(mut self, key: &'static str, value: &str) -> Self {
        self.pairs.push((key, value.parse().expect("ASCII metadata value")));
        self
    }
}

impl Interceptor for Metadata {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for (key, value) in &self.pairs {
            request.metadata_mut().append(*key, value.clone());
        }
        Ok(request)
    }
}

/// The ErrorInfo reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_error_details().error_info().map(|info| info.reason.clone()).unwrap_or_default()
}

/// Asserts a call failed with `code` and ErrorInfo `expected_reason`.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
    expected_reason: &str,
) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "unexpected code; status: {status:?}");
    assert_eq!(reason(&status), expected_reason, "unexpected reason; status: {status:?}");
}

pub use proto::api_key::Scope as ApiKeyScope;
pub use proto::tenant::IsolationTier;
pub use proto::tenant::State;

/// Scopes the open transaction of a raw client to `tenant`, with the exact statement
/// tenantd sends (`SET LOCAL app.tenant_id = '<uuid>'`, a statement of its own).
pub async fn set_tenant(client: &tokio_postgres::Client, tenant: &str) {
    let tenant = uuid::Uuid::parse_str(tenant).expect("a tenant id");
    client.batch_execute(&tenantd::db::tenant_tx::set_tenant_statement(tenant)).await.expect("set tenant");
}

/// The one cross-tenant isolation check every resource's tests call, with its positive
/// control built in. `create(tenant)` makes a resource in a new tenant A and returns its id;
/// `get(tenant, id)` and `delete(tenant, id)` call as `tenant`. A reads it; another tenant B
/// gets NOT_FOUND with `expected_reason` for both (exactly like a missing id); and A still has it.
pub async fn assert_isolated<C, G, D>(app: &TestApp, expected_reason: &str, create: C, get: G, delete: D)
where
    C: AsyncFnOnce(String) -> String,
    G: AsyncFn(String, String) -> Result<(), tonic::Status>,
    D: AsyncFn(String, String) -> Result<(), tonic::Status>,
{
    let owner = app.create_tenant(&unique_slug("iso-a")).await.id;
    let other = app.create_tenant(&unique_slug("iso-b")).await.id;
    let id = create(owner.clone()).await;
    get(owner.clone(), id.clone()).await.expect("control: the owner reads its resource");
    let missing = uuid::Uuid::now_v7().to_string();
    let not_found = |result: Result<(), tonic::Status>, what: &str| {
        let status = result.expect_err(what);
        assert_eq!((status.code(), reason(&status)), (tonic::Code::NotFound, expected_reason.to_owned()), "{what}");
    };
    not_found(get(owner.clone(), missing).await, "control: a missing id is NOT_FOUND");
    not_found(get(other.clone(), id.clone()).await, "another tenant cannot read it");
    not_found(delete(other, id.clone()).await, "another tenant cannot delete it");
    get(owner, id).await.expect("the owner still has it after the other tenant tried");
}

/// A process of the real binary, killed if the test ends early.
pub struct KillOnDrop(pub Option<std::process::Child>);

impl KillOnDrop {
    pub fn id(&self) -> u32 {
        self.0.as_ref().map(std::process::Child::id).unwrap_or_default()
    }

    /// Waits for the process to exit, for at most `bound`.
    pub async fn wait_for(mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        let child = self.0.as_mut()?;
        while started.elapsed() < bound {
            if let Ok(Some(status)) = child.try_wait() {
                self.0 = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
