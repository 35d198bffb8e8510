//! A bare tonic server for `tenantd.v1.DiagnosticsService/Ping`, with no tenant layer: no
//! authentication, no tenant resolution, no timeout layer, no per-RPC span or log line.
//! It answers with the `x-tenant-id` the caller sent, so its response is the same size as
//! tenantd's. `bench/run.sh` compares it with tenantd's Ping to measure what the tenant
//! layer costs.
//!
//! ```sh
//! cargo run --release --example echo_server -- --listen-addr 127.0.0.1:50052
//! ```

use std::net::SocketAddr;

use clap::Parser;
use tenantd::proto::diagnostics_service_server::{DiagnosticsService, DiagnosticsServiceServer};
use tenantd::proto::{PingRequest, PingResponse};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "echo_server", about = "bare tonic DiagnosticsService/Ping, for comparison")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50052")]
    listen_addr: SocketAddr,
}

/// Answers Ping with the caller's `x-tenant-id`.
struct Echo;

#[tonic::async_trait]
impl DiagnosticsService for Echo {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let tenant_id =
            request.metadata().get("x-tenant-id").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
        Ok(Response::new(PingResponse { tenant_id }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen_addr).await?;
    eprintln!("echo_server listening on {}", listener.local_addr()?);
    // Same socket options as tenantd's listener.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(DiagnosticsServiceServer::new(Echo))
        .serve_with_incoming_shutdown(incoming, shutdown_signal())
        .await?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
