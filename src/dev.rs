//! `tenantd dev`: the real server ([`Application::build`], exactly as `serve` builds it) on a
//! PostgreSQL cluster of its own ([`crate::devdb`]), for a first hour with nothing to set up
//! beyond a PostgreSQL install.
//!
//! It starts the cluster in a temporary directory (or `--data-dir`, kept and reused), creates
//! the database `tenantd`, migrates it as the cluster's superuser and serves as `tenantd_app`
//! with a fresh password (the same two roles as production), uses Redis if one answers, creates
//! a demo tenant and a tenant API key, and prints the commands to paste. SIGINT (Ctrl-C) or
//! SIGTERM stops the server, then PostgreSQL (`pg_ctl stop -m fast`), then removes the
//! temporary directory; so does a failure during start-up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::{Cli, Command, DevArgs};
use crate::config::{Config, SecretString};
use crate::db::migrations;
use crate::devdb::{Cluster, HostAuthentication, StopMode};
use crate::proto::tenant_service_client::TenantServiceClient;
use crate::proto::{self, api_key, get_tenant_request};
use crate::startup::Application;

/// The demo tenant's slug.
pub const DEMO_SLUG: &str = "demo";
/// The database `tenantd dev` creates in its cluster.
const DATABASE: &str = "tenantd";
/// How long start-up may wait for readiness.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The cluster, stopped (and its temporary directory removed) when this is dropped, so that
/// every way out of [`run`] cleans up.
struct OwnedCluster {
    cluster: Option<Cluster>,
    temporary: bool,
}

impl OwnedCluster {
    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("a cluster until stopped")
    }

    /// Stops PostgreSQL, then removes the directory if it is a temporary one.
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(cluster) = self.cluster.take() else { return Ok(()) };
        cluster.stop(StopMode::Fast)?;
        if self.temporary {
            std::fs::remove_dir_all(cluster.directory())
                .with_context(|| format!("removing {}", cluster.directory().display()))?;
        }
        Ok(())
    }
}

impl Drop for OwnedCluster {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("tenantd dev: {error:#}");
        }
    }
}

/// `tenantd dev`: runs until SIGINT or SIGTERM, then stops everything it started.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // Listening from the start means a Ctrl-C during start-up still cleans up, rather than
    // killing the process with a cluster left running.
    let stop = CancellationToken::new();
    let stop_on_signal = stop.clone();
    let mut signals = Signals::listen()?;
    tokio::spawn(async move {
        signals.recv().await;
        stop_on_signal.cancel();
    });

    let bindir = crate::devdb::find_bindir(args.pg_bindir.as_deref())?;
    let (directory, temporary) = match &args.data_dir {
        Some(directory) => (directory.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tenantd-dev-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])),
            true,
        ),
    };
    let reused = Cluster::exists_in(&directory);
    let cluster = if reused {
        Cluster::open(&bindir, &directory)?
    } else {
        if temporary {
            // Claims the fresh name, so that the cleanup below removes only what this run made.
            std::fs::create_dir(&directory).with_context(|| format!("creating {}", directory.display()))?;
        }
        let initialised = Cluster::init(&bindir, &directory, HostAuthentication::Password);
        if initialised.is_err() && temporary {
            let _ = std::fs::remove_dir_all(&directory);
        }
        initialised?
    };
    let mut owned = OwnedCluster { cluster: Some(cluster), temporary };
    let cluster = owned.cluster();
    tracing::info!(directory = %cluster.directory().display(), port = cluster.port(), reused, "starting postgresql");
    cluster.start()?;

    let app_password = random_hex();
    prepare_database(cluster, &app_password).await?;
    let redis_answers = redis_answers(args.redis_url.expose_secret()).await;
    let platform_token = match &args.platform_token {
        Some(token) => token.clone(),
        None => SecretString::from(format!("dev-{}", random_hex())),
    };
    let config = dev_config(&args, cluster.tcp_url("tenantd_app", Some(&app_password), DATABASE), &platform_token)?;
    let application = Application::build(config).await?;
    let port = application.port();
    let server = tokio::spawn(application.run_until(stop.clone().cancelled_owned()));

    let address = format!("127.0.0.1:{port}");
    let demo = tokio::select! {
        demo = demo_tenant(&address, platform_token.expose_secret()) => Some(demo?),
        () = stop.cancelled() => None,
    };
    if let Some(demo) = &demo {
        print_banner(&Banner {
            address: &address,
            cluster,
            temporary,
            redis_url: args.redis_url.expose_secret(),
            redis_answers,
            platform_token: platform_token.expose_secret(),
            demo,
        });
    }
    server.await.context("server task")??;
    tracing::info!("server stopped; stopping postgresql");
    owned.stop()?;
    println!("tenantd dev: stopped");
    Ok(())
}

/// SIGINT and SIGTERM.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// 128 random bits in hex: a password or token that needs no quoting anywhere.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    // Without the OS's randomness the process cannot make a secret; uuid v4 uses the same source.
    if getrandom::fill(&mut bytes).is_err() {
        return uuid::Uuid::new_v4().simple().to_string();
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Creates the database (unless it exists), migrates it as the superuser `postgres` (over the
/// cluster's trusted socket, as an operator's migration role would), and gives the app role
/// a fresh password, since TCP logins need one.
async fn prepare_database(cluster: &Cluster, app_password: &str) -> anyhow::Result<()> {
    let mut admin = AsyncPgConnection::establish(&cluster.socket_settings("postgres", "postgres"))
        .await
        .context("connecting to the dev cluster as postgres")?;
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let found: Found = diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
        .bind::<diesel::sql_types::Text, _>(DATABASE)
        .get_result(&mut admin)
        .await
        .context("looking for the database")?;
    if !found.exists {
        diesel::sql_query(format!("CREATE DATABASE {DATABASE}"))
            .execute(&mut admin)
            .await
            .context("CREATE DATABASE")?;
    }
    let applied = migrations::run_pending(&cluster.socket_settings("postgres", DATABASE)).await?;
    tracing::info!(applied, "migrations are current");
    // ALTER ROLE takes no bind parameters; the password is hex digits only.
    diesel::sql_query(format!("ALTER ROLE tenantd_app PASSWORD '{app_password}'"))
        .execute(&mut admin)
        .await
        .context("setting the app role's password")?;
    Ok(())
}

/// Whether a Redis server answers PING at `url` within a second.
async fn redis_answers(url: &str) -> bool {
    let attempt = async {
        let client = redis::Client::open(url).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut connection).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(_)))
}

/// `serve`'s own defaults (parsed as `serve` parses them, so there is one source of truth),
/// with the dev cluster, the dev listen address, Redis URL and token.
fn dev_config(args: &DevArgs, database_url: String, platform_token: &SecretString) -> anyhow::Result<Config> {
    let cli = Cli::try_parse_from([
        "tenantd".to_owned(),
        "serve".to_owned(),
        format!("--listen-addr={}", args.listen_addr),
        format!("--database-url={database_url}"),
        format!("--redis-url={}", args.redis_url.expose_secret()),
        format!("--platform-token={}", platform_token.expose_secret()),
    ])
    .context("the dev settings")?;
    let Command::Serve(serve) = cli.command else { bail!("the dev settings did not parse as serve") };
    let mut config = Config::from(*serve);
    // Migrated above, as the superuser: a TENANTD_MIGRATE in the environment must not apply.
    config.database.migrate = false;
    config.database.migration_url = None;
    Ok(config)
}

/// What `tenantd dev` made for the first calls.
struct Demo {
    tenant_id: String,
    api_key: String,
}

/// Waits for readiness, then creates the demo tenant (or finds it, in a reused data
/// directory) and a tenant API key, through the server's own API.
async fn demo_tenant(address: &str, platform_token: &str) -> anyhow::Result<Demo> {
    let channel = Channel::from_shared(format!("http://{address}"))?.connect_lazy();
    let mut health = HealthClient::new(channel.clone());
    let started = Instant::now();
    loop {
        let answer = health.check(HealthCheckRequest { service: String::new() }).await;
        if answer.is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32) {
            break;
        }
        if started.elapsed() > READY_WITHIN {
            bail!("tenantd did not become ready within {READY_WITHIN:?}; its log above says why");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let authorization: MetadataValue<_> = format!("Bearer {platform_token}").parse()?;
    let mut tenants = TenantServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", authorization.clone());
        Ok(request)
    });
    let created = tenants
        .create_tenant(proto::CreateTenantRequest {
            tenant: Some(proto::Tenant {
                slug: DEMO_SLUG.to_owned(),
                display_name: "Demo".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let tenant = match created {
        Ok(tenant) => tenant.into_inner(),
        Err(status) if status.code() == tonic::Code::AlreadyExists => tenants
            .get_tenant(proto::GetTenantRequest {
                selector: Some(get_tenant_request::Selector::Slug(DEMO_SLUG.to_owned())),
            })
            .await
            .context("reading the demo tenant")?
            .into_inner(),
        Err(status) => return Err(status).context("creating the demo tenant"),
    };
    let key = tenants
        .create_api_key(proto::CreateApiKeyRequest {
            tenant_id: tenant.id.clone(),
            api_key: Some(proto::ApiKey {
                display_name: "tenantd dev".to_owned(),
                scopes: vec![api_key::Scope::Read as i32, api_key::Scope::Write as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("creating the demo API key")?
        .into_inner();
    Ok(Demo { tenant_id: tenant.id, api_key: key.secret })
}

/// What the banner shows.
struct Banner<'a> {
    address: &'a str,
    cluster: &'a Cluster,
    temporary: bool,
    redis_url: &'a str,
    redis_answers: bool,
    platform_token: &'a str,
    demo: &'a Demo,
}

/// Prints where everything is and the commands to paste, with the real port and secrets
/// (this is a dev server: the token and key are meant to be copied).
fn print_banner(banner: &Banner<'_>) {
    let Banner { address, cluster, temporary, redis_url, redis_answers, platform_token, demo } = banner;
    let binary: PathBuf = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tenantd"));
    let binary = binary.display();
    let directory = cluster.directory().display();
    let port = cluster.port();
    let data = if *temporary { "removed on exit" } else { "kept" };
    let redis = if *redis_answers { "answering" } else { "not answering: serving without it" };
    let Demo { tenant_id, api_key } = demo;
    println!(
        "
tenantd dev: ready. Ctrl-C stops the server and PostgreSQL.

  server       http://{address}
  postgres     127.0.0.1:{port}, data in {directory} ({data})
  psql         psql \"host={directory} port={port} user=postgres dbname={DATABASE}\"
  redis        {redis_url} ({redis})
  demo tenant  {DEMO_SLUG} {tenant_id}
  api key      {api_key}

Paste into another shell:

  export TENANTD_SERVER=http://{address} TENANTD_PLATFORM_TOKEN={platform_token}
  {binary} tenants get --slug {DEMO_SLUG}
  grpcurl -plaintext -H 'authorization: Bearer {platform_token}' -d '{{\"id\": \"{tenant_id}\"}}' {address} tenantd.v1.TenantService/GetTenant
  grpcurl -plaintext -H 'authorization: Bearer {api_key}' -d '{{\"user\": {{\"email\": \"ada@demo.example\"}}}}' {address} tenantd.v1.UserService/CreateUser
  grpcurl -plaintext -H 'authorization: Bearer {api_key}' {address} tenantd.v1.UserService/ListUsers
"
    );
}
