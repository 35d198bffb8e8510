//! TLS end to end: the gRPC server with its certificate reloaded from disk and mutual TLS,
//! the plaintext health-only port, and PostgreSQL and Redis reached over TLS on throwaway
//! servers (`ssl = on`, `--tls-port`) with certificates made in the test. Every refusal has a
//! positive control beside it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tenantd::config::{Config, TlsConfig};
use tenantd::db::connect::PgTarget;
use tenantd::proto::get_tenant_request::Selector;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{CreateTenantRequest, GetTenantRequest, Tenant};
use tenantd::startup::Application;
use tenantd::tls::server::{Reload, ReloadingTls};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::certs::{Leaf, TempDir, TestCa};
use crate::helpers::{Metadata, create_database, migrate, spawn_app_with, test_config};
use crate::throwaway::{ThrowawayPostgres, ThrowawayRedis};

/// A server serving TLS, with its plaintext health port.
struct TlsServer {
    port: u16,
    health_port: u16,
    tls: std::sync::Arc<ReloadingTls>,
    files: TempDir,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl TlsServer {
    /// A migrated database and a server presenting `certificate` (for `localhost`), requiring
    /// client certificates signed by `client_ca` if given; files are looked at every 50 ms.
    async fn start(certificate: &Leaf, client_ca: Option<&TestCa>) -> Self {
        let files = TempDir::new();
        let database = create_database().await;
        migrate(&database).await;
        let mut config = test_config(&database);
        config.tls = Some(TlsConfig {
            cert_file: files.write("tls.crt", &certificate.cert),
            key_file: files.write("tls.key", &certificate.key),
            client_ca_file: client_ca.map(|ca| files.write("clients.crt", &ca.pem)),
            reload_interval: Duration::from_millis(50),
        });
        config.health_listen_addr = Some("127.0.0.1:0".parse().expect("address"));
        let application = Application::build(config).await.expect("build a TLS server");
        let (port, health_port) = (application.port(), application.health_port().expect("health port on"));
        let tls = application.tls().expect("TLS on");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(application.run_until(shutdown.clone().cancelled_owned()));
        let started = Self { port, health_port, tls, files, shutdown, server };
        started.wait_until_ready().await;
        started
    }

    async fn wait_until_ready(&self) {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", self.health_port)).expect("uri");
        let mut health = HealthClient::new(channel.connect_lazy());
        let started = Instant::now();
        loop {
            let status = health.check(HealthCheckRequest { service: String::new() }).await;
            if status.is_ok_and(|response| response.into_inner().status == ServingStatus::Serving as i32) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Creates a tenant over a TLS connection trusting `ca` (and presenting `identity`):
    /// a real RPC with the platform token. `Err` is what the client saw.
    async fn create_tenant(&self, ca: &TestCa, identity: Option<&Leaf>) -> Result<Tenant, String> {
        let channel = tls_channel(self.port, &ca.pem, identity).await?;
        let mut tenants = TenantServiceClient::with_interceptor(channel, Metadata::platform());
        let slug = format!("tls-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let request = CreateTenantRequest {
            tenant: Some(Tenant { slug, display_name: "TLS".into(), ..Default::default() }),
            ..Default::default()
        };
        tenants.create_tenant(request).await.map(tonic::Response::into_inner).map_err(|status| {
            assert_ne!(status.code(), Code::Internal, "{status:?}");
            format!("{}: {}", status.message(), error_chain(&status))
        })
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("server task").expect("server stopped cleanly");
    }
}

/// A channel to `127.0.0.1:port` over TLS, verifying the name `localhost` against `ca_pem`.
async fn tls_channel(port: u16, ca_pem: &str, identity: Option<&Leaf>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("uri")
        .tls_config(tls)
        .expect("client TLS")
        .connect_timeout(Duration::from_secs(5));
    endpoint.connect().await.map_err(|error| error_chain(&error))
}

fn get_by_id(id: String) -> GetTenantRequest {
    GetTenantRequest { selector: Some(Selector::Id(id)) }
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn a_tls_server_serves_clients_that_trust_its_ca_and_is_refused_by_those_that_do_not() {
    let (ca, other_ca) = (TestCa::new("tenantd test CA"), TestCa::new("another CA"));
    let server = TlsServer::start(&ca.server(&["localhost"]), None).await;

    let created = server.create_tenant(&ca, None).await.expect("a client trusting the CA is served");
    assert!(!created.id.is_empty());
    let refused = server.create_tenant(&other_ca, None).await.expect_err("another CA is refused");
    assert!(refused.contains("invalid peer certificate") && refused.contains("UnknownIssuer"), "{refused}");

    // Plaintext on the TLS port gets no gRPC answer.
    let plaintext = Channel::from_shared(format!("http://127.0.0.1:{}", server.port)).expect("uri").connect_lazy();
    let mut tenants = TenantServiceClient::with_interceptor(plaintext, Metadata::platform());
    let status = tenants.get_tenant(get_by_id(created.id.clone())).await.expect_err("plaintext");
    assert!(matches!(status.code(), Code::Unavailable | Code::Unknown), "{status:?}");

    // The plaintext health port answers grpc.health.v1 and nothing else.
    let health = Channel::from_shared(format!("http://127.0.0.1:{}", server.health_port)).expect("uri").connect_lazy();
    let ready = HealthClient::new(health.clone()).check(HealthCheckRequest { service: String::new() }).await;
    assert_eq!(ready.expect("health on the health port").into_inner().status, ServingStatus::Serving as i32);
    let mut tenants = TenantServiceClient::with_interceptor(health, Metadata::platform());
    let status = tenants.get_tenant(get_by_id(created.id)).await.expect_err("not served there");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_by_the_client_and_the_server_keeps_serving() {
    let ca = TestCa::new("tenantd test CA");
    let server = TlsServer::start(&ca.expired_server(&["localhost"]), None).await;
    let refused = server.create_tenant(&ca, None).await.expect_err("an expired certificate is refused");
    assert!(refused.contains("invalid peer certificate: certificate expired"), "{refused}");

    // Positive control: the same server with a valid certificate (reloaded) serves.
    let valid = ca.server(&["localhost"]);
    server.files.write("tls.key", &valid.key);
    server.files.write("tls.crt", &valid.cert);
    assert_eq!(server.tls.reload_if_changed(), Reload::Reloaded);
    server.create_tenant(&ca, None).await.expect("a valid certificate is accepted");
    server.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_only_clients_presenting_a_valid_certificate_it_signed_are_served() {
    let (ca, clients, other_clients) = (TestCa::new("server CA"), TestCa::new("client CA"), TestCa::new("other CA"));
    let server = TlsServer::start(&ca.server(&["localhost"]), Some(&clients)).await;

    let refusals = [
        ("no client certificate", None, "received fatal alert: CertificateRequired"),
        ("a certificate from another CA", Some(other_clients.client()), "received fatal alert: UnknownCA"),
        ("an expired certificate", Some(clients.expired_client()), "received fatal alert: CertificateExpired"),
    ];
    for (what, identity, alert) in &refusals {
        let refused = server.create_tenant(&ca, identity.as_ref()).await.expect_err(what);
        // TLS 1.3: the client learns of the refusal from the server's alert, on its first RPC.
        println!("{what}: {refused}");
        assert!(refused.contains(alert), "{what}: {refused}");
    }
    // Positive control: a valid client certificate is served, after the refusals.
    server.create_tenant(&ca, Some(&clients.client())).await.expect("a valid client certificate is served");
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_and_a_broken_file_keeps_the_previous_one() {
    let (first_ca, second_ca) = (TestCa::new("first CA"), TestCa::new("second CA"));
    let server = TlsServer::start(&first_ca.server(&["localhost"]), None).await;
    server.create_tenant(&first_ca, None).await.expect("the first certificate serves");
    let kept_open = tls_channel(server.port, &first_ca.pem, None).await.expect("a connection made before rotation");
    server.create_tenant(&second_ca, None).await.expect_err("not yet the second certificate");

    // Rotate as cert-manager does: each file replaced atomically, the key first.
    let second = second_ca.server(&["localhost"]);
    let rotated = Instant::now();
    server.files.write("tls.key", &second.key);
    server.files.write("tls.crt", &second.cert);
    let served = loop {
        if server.create_tenant(&second_ca, None).await.is_ok() {
            break rotated.elapsed();
        }
        assert!(rotated.elapsed() < Duration::from_secs(5), "the rotated certificate is never served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("rotated certificate served after {served:?} (files looked at every 50 ms)");
    let refused = server.create_tenant(&first_ca, None).await.expect_err("the first certificate is gone");
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    // A connection opened before the rotation keeps working.
    let mut tenants = TenantServiceClient::with_interceptor(kept_open, Metadata::platform());
    let listed = tenants.list_tenants(tenantd::proto::ListTenantsRequest::default()).await;
    assert!(listed.is_ok(), "{listed:?}");

    // A broken file keeps the second certificate.
    server.files.write("tls.crt", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    assert_eq!(server.tls.reload_if_changed(), Reload::Failed);
    server.create_tenant(&second_ca, None).await.expect("the previous certificate still serves");
    // Positive control: the unchanged files are not reloaded again.
    server.files.write("tls.crt", &second.cert);
    let _ = server.tls.reload_if_changed();
    assert_eq!(server.tls.reload_if_changed(), Reload::Unchanged);
    server.stop().await;
}

#[tokio::test]
async fn a_tls_file_that_cannot_be_used_at_start_up_is_an_error_naming_the_file() {
    let ca = TestCa::new("tenantd test CA");
    let (good, other) = (ca.server(&["localhost"]), ca.server(&["localhost"]));
    let files = TempDir::new();
    let cert = files.write("tls.crt", &good.cert);
    let key = files.write("tls.key", &good.key);
    let tls = |cert: PathBuf, key: PathBuf, client_ca_file: Option<PathBuf>| TlsConfig {
        cert_file: cert,
        key_file: key,
        client_ca_file,
        reload_interval: Duration::from_secs(5),
    };
    let cases = [
        (tls(files.path("missing.crt"), key.clone(), None), "missing.crt"),
        (tls(cert.clone(), files.write("garbage.key", "not a key"), None), "garbage.key"),
        (tls(files.write("garbage.crt", "not a certificate"), key.clone(), None), "garbage.crt"),
        (tls(cert.clone(), files.write("other.key", &other.key), None), "does not fit"),
        (tls(cert.clone(), key.clone(), Some(files.write("clients.crt", "no CA here"))), "clients.crt"),
    ];
    for (settings, named) in cases {
        let error = ReloadingTls::load(&settings).err().map(|error| format!("{error:#}")).expect(named);
        assert!(error.contains(named), "{named}: {error}");
        assert!(!error.contains("PRIVATE KEY"), "{error}");
    }
    // Positive control: the good pair loads.
    ReloadingTls::load(&tls(cert, key, None)).expect("the good pair loads");

    // And Application::build reports it before anything else.
    let mut config: Config = test_config("unused");
    config.tls = Some(tls(files.path("missing.crt"), files.path("tls.key"), None));
    let error = Application::build(config).await.err().expect("start-up fails");
    assert!(format!("{error:#}").contains("missing.crt"), "{error:#}");
}

/// A URL of `user` on database `tenantd` of the throwaway cluster at `host`, with `query`.
fn pg_url(postgres: &ThrowawayPostgres, user: &str, host: &str, query: &str) -> String {
    format!("postgres://{user}@{host}:{}/tenantd?{query}", postgres.port())
}

#[tokio::test]
async fn postgres_over_tls_with_the_right_ca_migrates_probes_and_serves_rpcs() {
    let ca = TestCa::new("postgres CA");
    let postgres = ThrowawayPostgres::start_with_tls(&ca.server(&["localhost"]));
    let files = TempDir::new();
    let ca_file = files.write("ca.crt", &ca.pem).display().to_string();
    let tls_query = format!("sslmode=verify-full&sslrootcert={ca_file}");

    // The cluster refuses plaintext: the connections below are TLS.
    let plaintext = PgTarget::parse(&pg_url(&postgres, "postgres", "localhost", "sslmode=disable")).expect("url");
    let refused = plaintext.connect().await.err().map(|error| error.to_string()).expect("plaintext refused");
    assert!(refused.contains("no encryption") || refused.contains("pg_hba.conf"), "{refused}");

    let admin_url = format!("postgres://postgres@localhost:{}/postgres?{tls_query}", postgres.port());
    let admin = PgTarget::parse(&admin_url).expect("url");
    let mut connection = admin.connect().await.expect("TLS with the right CA connects");
    diesel_async::SimpleAsyncConnection::batch_execute(&mut connection, "CREATE DATABASE tenantd")
        .await
        .expect("create database");
    let applied = tenantd::db::migrations::run_pending(&pg_url(&postgres, "postgres", "localhost", &tls_query))
        .await
        .expect("migrations over TLS");
    assert!(applied > 0);

    let app = spawn_app_on(pg_url(&postgres, "tenantd_app", "localhost", &tls_query)).await;
    app.wait_for_status("postgres", ServingStatus::Serving).await;
    let tenant = app.create_tenant("over-tls").await;
    let fetched = app.tenants.clone().get_tenant(get_by_id(tenant.id.clone())).await;
    assert_eq!(fetched.expect("read back over the TLS pool").into_inner().slug, "over-tls");
    app.stop().await;
}

/// A ready server on the given app-role URL (the database was migrated by the caller).
async fn spawn_app_on(database_url: String) -> crate::helpers::TestApp {
    let mut config = test_config("unused");
    config.database.url = SecretString::from(database_url);
    let app = crate::helpers::start("unused".into(), config).await;
    app.wait_for_status("", ServingStatus::Serving).await;
    app
}

#[tokio::test]
async fn postgres_refuses_a_wrong_ca_and_verify_full_refuses_a_wrong_host_name() {
    let (ca, other_ca) = (TestCa::new("postgres CA"), TestCa::new("another CA"));
    // The certificate names `localhost` only; 127.0.0.1 is the same server under a name
    // the certificate does not carry.
    let postgres = ThrowawayPostgres::start_with_tls(&ca.server(&["localhost"]));
    let files = TempDir::new();
    let ca_file = files.write("ca.crt", &ca.pem).display().to_string();
    let other_file = files.write("other.crt", &other_ca.pem).display().to_string();
    let connect = |host: &str, query: String| {
        let target = PgTarget::parse(&format!("postgres://postgres@{host}:{}/postgres?{query}", postgres.port()));
        async move { target.expect("url").connect().await.map(|_| ()).map_err(|error| error.to_string()) }
    };

    let wrong_ca = connect("localhost", format!("sslmode=verify-full&sslrootcert={other_file}")).await;
    assert!(wrong_ca.as_ref().expect_err("a wrong CA is refused").contains("UnknownIssuer"), "{wrong_ca:?}");
    let wrong_ca = connect("localhost", format!("sslmode=verify-ca&sslrootcert={other_file}")).await;
    assert!(wrong_ca.as_ref().expect_err("verify-ca checks the chain").contains("UnknownIssuer"), "{wrong_ca:?}");
    let system_roots = connect("localhost", "sslmode=verify-full".to_owned()).await;
    assert!(system_roots.is_err(), "the system's CAs did not sign the test certificate");

    for mode in ["verify-full", "require"] {
        let wrong_name = connect("127.0.0.1", format!("sslmode={mode}&sslrootcert={ca_file}")).await;
        let error = wrong_name.expect_err("a name the certificate does not carry is refused");
        assert!(error.contains("certificate not valid for name \"127.0.0.1\""), "{mode}: {error}");
    }
    // Positive controls: the right name, and verify-ca (chain only) at the other name.
    connect("localhost", format!("sslmode=verify-full&sslrootcert={ca_file}")).await.expect("the right name");
    connect("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={ca_file}")).await.expect("verify-ca");
}

#[tokio::test]
async fn redis_over_tls_with_the_right_ca_serves_and_a_wrong_ca_is_refused() {
    let (ca, other_ca) = (TestCa::new("redis CA"), TestCa::new("another CA"));
    let redis = ThrowawayRedis::start_with_tls(&ca.server(&["127.0.0.1"]));
    let files = TempDir::new();
    let ca_file = files.write("ca.crt", &ca.pem);
    let other_file = files.write("other.crt", &other_ca.pem);

    let app = spawn_app_with(|config| {
        config.redis.url = SecretString::from(redis.url());
        config.redis.tls_ca_file = Some(ca_file.clone());
    })
    .await;
    app.wait_for_status("redis", ServingStatus::Serving).await;
    // A real RPC whose tenant resolution is cached in Redis.
    let tenant = app.create_tenant("redis-tls").await;
    app.tenants.clone().get_tenant(get_by_id(tenant.id)).await.expect("served");
    app.stop().await;

    let wrong = spawn_app_with(|config| {
        config.redis.url = SecretString::from(redis.url());
        config.redis.tls_ca_file = Some(other_file.clone());
    })
    .await;
    // Ready (Redis is optional) but Redis is not up: the handshake was refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wrong.status("redis").await, ServingStatus::NotServing);
    assert_eq!(wrong.status("").await, ServingStatus::Serving);
    wrong.stop().await;

    let timeout = Duration::from_millis(500);
    let insecure = tenantd::cache::RedisCache::new(&format!("{}/#insecure", redis.url()), None, 1, timeout);
    assert!(insecure.is_err(), "verification cannot be turned off");
    let plaintext_with_ca = tenantd::cache::RedisCache::new("redis://127.0.0.1:1", Some(&ca_file), 1, timeout);
    assert!(plaintext_with_ca.err().expect("a CA file needs rediss://").to_string().contains("rediss://"));
    let right = tenantd::cache::RedisCache::new(&redis.url(), Some(&ca_file), 1, timeout).expect("client");
    assert!(right.probe().await, "the right CA answers PING");
    let wrong = tenantd::cache::RedisCache::new(&redis.url(), Some(&other_file), 1, timeout).expect("client");
    assert!(!wrong.probe().await, "a wrong CA is refused");
}

#[tokio::test]
async fn the_cli_calls_a_mutual_tls_server_with_its_ca_and_client_certificate() {
    let (ca, clients) = (TestCa::new("server CA"), TestCa::new("client CA"));
    let server = TlsServer::start(&ca.server(&["localhost", "127.0.0.1"]), Some(&clients)).await;
    let client = clients.client();
    let (ca_file, cert_file, key_file) = (
        server.files.write("cli-ca.crt", &ca.pem),
        server.files.write("cli-client.crt", &client.cert),
        server.files.write("cli-client.key", &client.key),
    );
    let https = format!("https://127.0.0.1:{}", server.port);
    // On a blocking thread: the server runs on this test's runtime.
    let run = |args: Vec<String>| async move {
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
                .args(&args)
                .env("TENANTD_PLATFORM_TOKEN", crate::helpers::PLATFORM_TOKEN)
                .output()
                .expect("run tenantd")
        })
        .await
        .expect("the CLI ran");
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let flag = |name: &str, path: &PathBuf| format!("--{name}={}", path.display());
    let with_identity = vec![
        "tenants".to_owned(),
        "list".to_owned(),
        format!("--server={https}"),
        flag("tls-ca-file", &ca_file),
        flag("tls-cert-file", &cert_file),
        flag("tls-key-file", &key_file),
    ];
    let (status, stderr) = run(with_identity.clone()).await;
    assert_eq!(status, Some(0), "{stderr}");

    let (status, stderr) = run(with_identity[..4].to_vec()).await;
    assert_eq!(status, Some(2), "without a client certificate: {stderr}");
    // The server ends the handshake. With TLS 1.3 the client may already count the handshake
    // as done, so how its call fails varies (the connection closed, never ready, a broken
    // pipe, the CertificateRequired alert): what is fixed is that it does not get through.
    assert!(stderr.contains("cannot reach the server"), "{stderr}");
    let plaintext =
        vec!["health".to_owned(), format!("--server=http://127.0.0.1:{}", server.port), flag("tls-ca-file", &ca_file)];
    let (status, stderr) = run(plaintext).await;
    assert_eq!(status, Some(2));
    assert!(stderr.contains("use https://"), "{stderr}");
    // Positive control: health over TLS (liveness needs no token).
    let health = vec!["health".to_owned(), format!("--server={https}"), flag("tls-ca-file", &ca_file)];
    let health = [health, vec![flag("tls-cert-file", &cert_file), flag("tls-key-file", &key_file)]].concat();
    // A loaded machine (the whole suite at once) can make one call time out or see readiness
    // flap; a broken handshake fails every attempt.
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let (status, stderr) = run(health.clone()).await;
        if status == Some(0) {
            break;
        }
        attempts.push(format!("{status:?}: {stderr}"));
    }
    assert!(attempts.len() < 3, "health over mutual TLS: {attempts:?}");
    server.stop().await;
}
