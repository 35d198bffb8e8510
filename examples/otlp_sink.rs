//! An OTLP/gRPC trace receiver that discards what it is sent (and counts the spans), so that
//! `bench/run.sh --traces` can measure what tracing costs tenantd without a collector's
//! own cost on the machine. Every second in which spans arrived it prints the total so far
//! (`spans N`) on stderr; it runs until killed.
//!
//! ```sh
//! cargo run --release --example otlp_sink -- --listen-addr 127.0.0.1:4317
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "otlp_sink", about = "OTLP/gRPC trace receiver that discards spans")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4317")]
    listen_addr: SocketAddr,
}

/// Counts spans and drops them.
#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen_addr).await?;
    eprintln!("otlp_sink listening on {}", listener.local_addr()?);
    let sink = Sink::default();
    let count = sink.0.clone();
    tokio::spawn(async move {
        let mut reported = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let total = count.load(Ordering::Relaxed);
            if total != reported {
                eprintln!("spans {total}");
                reported = total;
            }
        }
    });
    Server::builder()
        .add_service(TraceServiceServer::new(sink))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await?;
    Ok(())
}
