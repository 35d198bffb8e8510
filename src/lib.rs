//! tenantd: a gRPC tenant control plane whose tenant data is isolated by PostgreSQL
//! row-level security.
//!
//! The tree reads as the architecture:
//! - [`api`]: thin gRPC adapters (proto in, domain call, proto out), and the gateway's tower
//!   layers in front of them (admission, usage counting, metrics and the per-RPC log line);
//! - [`tenancy`]: the `TenantContext`, the resolver and the tenant transaction;
//! - [`auth`]: the bootstrap platform token, operator keys and tenant API keys;
//! - [`domain`]: validated domain types and the operations on them;
//! - [`db`]: the pool, migrations, schema and repositories;
//! - [`cache`]: Redis keys and the client that degrades instead of failing;
//! - [`health`]: grpc.health.v1 statuses driven by dependency probes;
//! - [`metrics`]: Prometheus metrics on their own port;
//! - [`config`]: the server's settings as plain values, secrets redacted;
//! - [`dev`] and [`devdb`]: `tenantd dev`, the server on a throwaway PostgreSQL cluster of its own;
//! - [`startup`]: server assembly from a [`config::Config`], used by `main` and by the tests alike;
//! - [`tls`]: PEM files, client roots, and the gRPC server's reloading TLS acceptor;
//! - [`cli`] and [`client`]: the command line (it parses into a [`config::Config`]), and the
//!   operator subcommands that call a server.

pub mod api;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod db;
pub mod dev;
pub mod devdb;
pub mod domain;
pub mod error;
pub mod health;
pub mod metrics;
pub mod progress;
pub mod startup;
pub mod telemetry;
pub mod tenancy;
pub mod tls;

/// Code generated from `proto/tenantd/v1` at build time.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("tenantd.v1");

    /// google.longrunning (AIP-151): the Operations service and its messages, generated from
    /// `third_party/googleapis/google/longrunning/operations.proto`.
    pub mod longrunning {
        tonic::include_proto!("google.longrunning");
    }

    /// Encoded descriptors of every tenantd proto file, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tenantd_descriptor");

    /// Encoded descriptors of `google/rpc/error_details.proto` (ErrorInfo, BadRequest, ...),
    /// served by reflection so clients such as grpcurl can print error details.
    pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("google_rpc_descriptor");
}
