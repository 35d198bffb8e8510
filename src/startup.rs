//! Server assembly, in one place: `main` and the tests start the same server the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tower::Layer;
use tower::layer::util::{Identity, Stack};

use crate::api::gateway::DeadlineLayer;
use crate::api::{
    AuditApi, DiagnosticsApi, DocumentApi, EventApi, OperationApi, OperatorApi, PlanApi, QuotaApi, SettingApi,
    TenantApi, UserApi, gateway,
};
use crate::auth::PlatformAuth;
use crate::cache::RedisCache;
use crate::config::{Config, ExposeSecret};
use crate::db::connect::PgTarget;
use crate::db::{self, migrations};
use crate::domain::api_keys::ApiKeys;
use crate::domain::archives::{ArchiveHandler, Archives};
use crate::domain::documents::Documents;
use crate::domain::events::EventHub;
use crate::domain::key_uses::KeyUseRecorder;
use crate::domain::moves::{MoveHandler, Moves};
use crate::domain::operations::{OperationHandler, OperationKind, OperationWorker, Operations};
use crate::domain::operators::Operators;
use crate::domain::plans::Plans;
use crate::domain::purge::{PurgeHandler, Purges};
use crate::domain::rate_warnings::{self, RateWarningWriter};
use crate::domain::settings::Settings;
use crate::domain::tenants::TenantRegistry;
use crate::domain::usage::UsageCounter;
use crate::domain::users::Users;
use crate::health::{Health, Prober};
use crate::metrics::Metrics;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::diagnostics_service_server::DiagnosticsServiceServer;
use crate::proto::document_service_server::DocumentServiceServer;
use crate::proto::event_service_server::EventServiceServer;
use crate::proto::longrunning::operations_server::OperationsServer;
use crate::proto::operator_service_server::OperatorServiceServer;
use crate::proto::plan_service_server::PlanServiceServer;
use crate::proto::quota_service_server::QuotaServiceServer;
use crate::proto::setting_service_server::SettingServiceServer;
use crate::proto::tenant_service_server::TenantServiceServer;
use crate::proto::user_service_server::UserServiceServer;
use crate::telemetry::traces::Traces;
use crate::tenancy::TenantDb;
use crate::tenancy::rate_limiter::RateLimiter;
use crate::tenancy::resolver::TenantResolver;
use crate::tls::server::ReloadingTls;

/// A built server, bound to its port and not yet serving.
pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router<Stack<DeadlineLayer, Identity>>,
    tls: Option<Arc<ReloadingTls>>,
    health_listener: Option<(TcpListener, Router)>,
    health: Arc<Health>,
    prober: Prober,
    resolver: Arc<TenantResolver>,
    key_uses: Arc<KeyUseRecorder>,
    activity: Arc<UsageCounter>,
    database: TenantDb,
    events: Arc<EventHub>,
    operation_worker: OperationWorker,
    archives: Archives,
    purges: Purges,
    rate_warnings: RateWarningWriter,
    metrics: Arc<Metrics>,
    metrics_listener: Option<TcpListener>,
    traces: Option<Traces>,
    config: Config,
}

/// `tenantd serve`: build, then serve until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let application = Application::build(config).await?;
    tracing::info!(port = application.port(), "tenantd listening");
    application.run_until_stopped().await
}

impl Application {
    /// Migrates (with `--migrate`), connects pools lazily, registers services and binds
    /// the listener. PostgreSQL and Redis need not be up: readiness reports it.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        // TLS settings are checked before anything else happens, so that a bad file is the
        // error that start-up reports.
        let tls = config.tls.as_ref().map(ReloadingTls::load).transpose()?.map(Arc::new);
        let database_target = PgTarget::parse(config.database.url.expose_secret()).context("TENANTD_DATABASE_URL")?;
        if config.database.migrate {
            let url =
                config.database.migration_url.as_ref().context("--migrate needs TENANTD_MIGRATION_DATABASE_URL")?;
            let applied = migrations::run_pending(url.expose_secret()).await?;
            tracing::info!(applied, "migrations are current");
        }
        let provisioning_target = config
            .database
            .provisioning_url
            .as_ref()
            .map(|url| PgTarget::parse(url.expose_secret()))
            .transpose()
            .context("TENANTD_PROVISIONING_DATABASE_URL")?;
        let provisioner = db::tenant_schema::Provisioner::new(provisioning_target);
        let availability = db::Availability::default();
        let pool = db::build_pool(
            database_target.clone(),
            config.database.pool_size,
            config.database.acquire_timeout,
            &availability,
        );
        let redis = if config.redis.cluster {
            anyhow::ensure!(
                config.redis.tls_ca_file.is_none(),
                "TENANTD_REDIS_TLS_CA_FILE is not supported with a cluster"
            );
            RedisCache::cluster(config.redis.url.expose_secret(), config.redis.operation_timeout)?
        } else {
            RedisCache::new(
                config.redis.url.expose_secret(),
                config.redis.tls_ca_file.as_deref(),
                config.redis.pool_size,
                config.redis.operation_timeout,
            )?
        };
        let auth = PlatformAuth::new(config.platform_token.clone())?;
        if !auth.bootstrap_enabled() {
            tracing::info!("no bootstrap platform token configured: platform calls need an operator key");
        }
        let database = TenantDb::new(pool, availability);
        let resolver = Arc::new(TenantResolver::new(database.clone(), redis.clone(), config.tenant_cache_ttl));
        let key_uses = Arc::new(KeyUseRecorder::default());
        let activity = Arc::new(UsageCounter::new(redis.clone()));

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Arc::new(Health::new(reporter).await);
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(crate::proto::ERROR_DETAILS_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(crate::proto::ERROR_DETAILS_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let metrics = Metrics::new(database.pool().clone(), redis.clone(), resolver.clone());
        let traces = config.traces.as_ref().map(Traces::start).transpose()?;
        let observe = gateway::ObserveLayer::new(metrics.clone(), traces.as_ref().map(Traces::tracer));
        let control_plane = gateway::control_plane(auth.clone(), resolver.clone(), observe.clone());
        let (warnings, warning_writer) = rate_warnings::channel(database.clone());
        let limiter = Arc::new(
            RateLimiter::new(redis.clone(), config.rate_limit_fallback_replicas)
                .with_warnings(config.rate_warning_window, warnings),
        );
        let events_gateway = gateway::events(auth.clone(), resolver.clone(), limiter.clone(), observe.clone());
        let events = EventHub::new(database.clone(), redis.clone(), config.events.clone());
        let usage = (key_uses.clone(), activity.clone());
        let data_plane = gateway::data_plane(auth, resolver.clone(), limiter, usage, observe);
        let operation_wake = Arc::new(tokio::sync::Notify::new());
        let operations = Operations::new(database.clone(), operation_wake.clone());
        let moves = Moves::new(operations.clone(), provisioner.clone(), resolver.clone());
        let move_handler = Arc::new(MoveHandler::new(
            provisioner.clone(),
            resolver.clone(),
            database.clone(),
            config.operations.move_drain,
        ));
        let archives = Archives::new(
            operations.clone(),
            database.clone(),
            provisioner.clone(),
            resolver.clone(),
            config.operations.archive_retention,
            config.operations.archive_signing_keys.clone(),
        );
        let archive_handler = |kind| {
            let keys = config.operations.archive_signing_keys.clone();
            Arc::new(ArchiveHandler::new(kind, database.clone(), provisioner.clone(), resolver.clone(), keys))
                as Arc<dyn OperationHandler>
        };
        let purge_handler = Arc::new(PurgeHandler::new(
            database.clone(),
            provisioner.clone(),
            resolver.clone(),
            redis.clone(),
            config.operations.purge_batch_rows,
            config.usage_flush_interval,
        ));
        let purges = Purges::new(operations.clone(), database.clone(), config.operations.purge_retention, &provisioner);
        let handlers = vec![
            move_handler as Arc<dyn OperationHandler>,
            purge_handler,
            archive_handler(OperationKind::ExportTenant),
            archive_handler(OperationKind::ImportTenant),
        ];
        let operation_worker =
            OperationWorker::new(database.clone(), config.operations.clone(), operation_wake, handlers);
        let tenant_api = TenantApi::new(
            TenantRegistry::new(database.clone(), resolver.clone(), provisioner),
            ApiKeys::new(database.clone(), resolver.clone()),
            activity.clone(),
            moves,
            archives.clone(),
            purges.clone(),
        );
        let limits = &config.limits;
        let (decode, encode) = (limits.max_decode_message_bytes, limits.max_encode_message_bytes);
        let tenant_service = control_plane.layer(
            TenantServiceServer::new(tenant_api).max_decoding_message_size(decode).max_encoding_message_size(encode),
        );
        let max_wait = limits.rpc_timeout.saturating_sub(Duration::from_millis(500));
        let operation_service = control_plane.layer(
            OperationsServer::new(OperationApi::new(operations.clone(), max_wait))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(encode),
        );
        let operator_service = control_plane.layer(
            OperatorServiceServer::new(OperatorApi::new(Operators::new(database.clone(), resolver.clone())))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(encode),
        );
        let plan_service = control_plane.layer(
            PlanServiceServer::new(PlanApi::new(Plans::new(database.clone(), resolver.clone())))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(encode),
        );
        let user_service = data_plane.layer(
            UserServiceServer::new(UserApi::new(Users::new(database.clone())))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(encode),
        );
        let document_service = data_plane.layer(
            DocumentServiceServer::new(DocumentApi::new(Documents::new(database.clone())))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(encode),
        );
        let setting_service = data_plane.layer(
            SettingServiceServer::new(SettingApi(Settings::new(database.clone()), database.clone()))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(encode),
        );
        let quota_service = data_plane.layer(QuotaServiceServer::new(QuotaApi::new(database.clone())));
        let diagnostics_service = data_plane.layer(DiagnosticsServiceServer::new(DiagnosticsApi));
        let event_service = events_gateway.layer(
            EventServiceServer::new(EventApi::new(events.clone()))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(encode),
        );
        let audit_service = data_plane.layer(
            AuditServiceServer::new(AuditApi::new(database.clone()))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(encode),
        );

        let router = Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_pending_accept_reset_streams(Some(limits.http2_max_pending_reset_streams))
            .http2_max_header_list_size(limits.max_header_list_bytes)
            .http2_keepalive_interval(Some(config.connections.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(config.connections.http2_keepalive_timeout))
            .max_connection_age(config.connections.max_connection_age)
            .max_connection_age_grace(config.connections.max_connection_age_grace)
            .trace_fn(crate::telemetry::rpc_span)
            // In place of `Server::timeout`: the same timeout for every call, but an idle
            // timeout for an ImportTenant upload (src/api/gateway/deadline.rs).
            .layer(DeadlineLayer::new(limits.rpc_timeout))
            .add_service(health_service.clone())
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(tenant_service)
            .add_service(operator_service)
            .add_service(plan_service)
            .add_service(operation_service)
            .add_service(user_service)
            .add_service(document_service)
            .add_service(setting_service)
            .add_service(quota_service)
            .add_service(audit_service)
            .add_service(event_service)
            .add_service(diagnostics_service);

        let prober = Prober::new(
            database_target,
            redis,
            migrations::latest_version()?,
            // A probe waits at most this long: long enough that a busy machine does not
            // look like a dead dependency, short enough to flip readiness within 2 s of a
            // silent outage (a refused connection fails at once).
            config.health_interval.max(Duration::from_secs(1)),
        )
        .reporting_schema_to(database.schema_gate())
        .reporting_availability_to(database.availability());
        let listener =
            TcpListener::bind(config.listen_addr).await.with_context(|| format!("binding {}", config.listen_addr))?;
        let port = listener.local_addr()?.port();
        if tls.is_none() && !config.listen_addr.ip().is_loopback() {
            tracing::warn!(
                listen_addr = %config.listen_addr,
                "serving plaintext gRPC on a non-loopback address; set TENANTD_TLS_CERT_FILE and TENANTD_TLS_KEY_FILE \
                 to serve TLS"
            );
        }
        // Health only, plaintext: Kubernetes gRPC probes do not speak TLS, and the statuses
        // are all a caller can learn there.
        let health_listener = match config.health_listen_addr {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding the health address {address}"))?;
                let router = Server::builder().timeout(limits.rpc_timeout).add_service(health_service);
                Some((listener, router))
            }
            None => None,
        };
        let metrics_listener = match config.metrics_addr {
            Some(address) => Some(
                TcpListener::bind(address).await.with_context(|| format!("binding the metrics address {address}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            port,
            router,
            tls,
            health_listener,
            health,
            prober,
            resolver,
            key_uses,
            activity,
            database,
            events,
            operation_worker,
            archives,
            purges,
            rate_warnings: warning_writer,
            metrics,
            metrics_listener,
            traces,
            config,
        })
    }

    /// The port the server is bound to (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the plaintext health-only endpoint, if it is on.
    pub fn health_port(&self) -> Option<u16> {
        let listener = self.health_listener.as_ref().map(|(listener, _)| listener);
        listener.and_then(|listener| listener.local_addr().ok()).map(|address| address.port())
    }

    /// The server's TLS, when it serves TLS (tests make it look at its files at once).
    pub fn tls(&self) -> Option<Arc<ReloadingTls>> {
        self.tls.clone()
    }

    /// The port of the metrics endpoint, if it is on.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok()).map(|address| address.port())
    }

    /// The event hub (its watcher count shows that ended streams released their place).
    pub fn event_hub(&self) -> Arc<EventHub> {
        self.events.clone()
    }

    /// The app-role pool (its statistics show how many checkouts requests made).
    pub fn database_pool(&self) -> db::PgPool {
        self.database.pool().clone()
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then shuts down in this order: readiness and
    /// liveness go NOT_SERVING; the pre-drain delay passes; the server stops accepting
    /// work and open health Watch streams end; in-flight RPCs finish, for at most the
    /// grace period; pending spans are exported. The health-only port, if on, follows the same
    /// steps. Returns when the server has stopped.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            tls,
            health_listener,
            health,
            prober,
            resolver,
            key_uses,
            activity,
            database,
            events,
            operation_worker,
            archives,
            purges,
            rate_warnings,
            metrics,
            metrics_listener,
            traces,
            config,
            ..
        } = self;
        let stop_probing = CancellationToken::new();
        let prober_task = tokio::spawn(prober.run(health.clone(), config.health_interval, stop_probing.clone()));
        let listener_task = tokio::spawn(resolver.listen(stop_probing.clone()));
        let metrics_task = metrics_listener.map(|listener| tokio::spawn(metrics.serve(listener, stop_probing.clone())));
        let stop_usage = CancellationToken::new();
        let usage_task = {
            let stop = stop_usage.clone();
            let interval = config.usage_flush_interval;
            tokio::spawn(async move {
                tokio::join!(key_uses.run(database, interval, stop.clone()), activity.run(interval, stop));
            })
        };

        // Ends every watch stream (WATCH_INTERRUPTED, with its cursor) when the server stops
        // accepting work, so that draining does not wait for them.
        let stop_events = CancellationToken::new();
        let events_task = tokio::spawn(events.run(stop_events.clone()));
        // Operations stop with the server's work; one left running is released for the
        // next claim.
        let operations_task = AbortOnDrop(tokio::spawn(operation_worker.run(stop_events.clone())));
        let _archive_sweep = AbortOnDrop(tokio::spawn(archives.sweep_expired(stop_events.clone())));
        // Every replica sweeps for tenants past their retention (decision 0020).
        let sweep_every = Purges::sweep_interval(config.operations.poll_interval);
        let sweep_task = AbortOnDrop(tokio::spawn(purges.sweep_until(sweep_every, stop_events.clone())));
        // Rate-limit warnings are recorded until the server's work stops (decision 0023).
        let _rate_warnings = AbortOnDrop(tokio::spawn(rate_warnings.run(stop_usage.clone())));

        let stop_accepting = CancellationToken::new();
        let incoming =
            TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(config.connections.tcp_keepalive));
        let stopped = stop_accepting.clone().cancelled_owned();
        let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> = match tls {
            None => Box::pin(router.serve_with_incoming_shutdown(incoming, stopped)),
            Some(tls) => {
                tokio::spawn(tls.clone().watch(stop_probing.clone()));
                let incoming = tls.incoming(incoming, stop_accepting.clone());
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
            }
        };
        let health_server = health_listener.map(|(listener, router)| {
            let stopped = stop_accepting.clone().cancelled_owned();
            tokio::spawn(router.serve_with_incoming_shutdown(TcpIncoming::from(listener), stopped))
        });
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => {
                stop_probing.cancel();
                stop_usage.cancel();
                stop_accepting.cancel();
                stop_events.cancel();
                if let Some(traces) = traces {
                    traces.shutdown().await;
                }
                return result.context("gRPC server failed");
            }
            () = shutdown => {}
        }

        tracing::info!("shutdown: readiness is NOT_SERVING");
        health.begin_shutdown().await;
        stop_probing.cancel();
        tokio::time::sleep(config.shutdown.predrain).await;
        tracing::info!("shutdown: no longer accepting work; draining");
        stop_accepting.cancel();
        stop_events.cancel();
        health.close_watches().await;
        match tokio::time::timeout(config.shutdown.grace, &mut server).await {
            Ok(result) => result.context("gRPC server failed while draining")?,
            Err(_elapsed) => {
                tracing::warn!(
                    grace_ms = config.shutdown.grace.as_millis(),
                    "shutdown: grace period over with RPCs in flight"
                )
            }
        }
        stop_usage.cancel();
        let _ = tokio::join!(
            prober_task,
            listener_task,
            usage_task,
            events_task,
            operations_task.join(),
            sweep_task.join()
        );
        if let Some(task) = health_server {
            let _ = tokio::time::timeout(config.shutdown.grace, task).await;
        }
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        if let Some(traces) = traces {
            traces.shutdown().await;
        }
        tracing::info!("shutdown: complete");
        Ok(())
    }
}

/// A task that ends with the server future: when that future is dropped without a graceful
/// stop (as a crashed replica's would be), its operation worker stops at once too, leaving
/// its lease to expire, so that tests can kill a replica mid-operation in-process.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    async fn join(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
