//! Compiles `proto/` into Rust at build time; generated code is never committed.

use std::path::PathBuf;

use prost_build::{Service, ServiceGenerator};

const PROTOS: [&str; 11] = [
    "proto/tenantd/v1/audit.proto",
    "proto/tenantd/v1/diagnostics_service.proto",
    "proto/tenantd/v1/document_service.proto",
    "proto/tenantd/v1/event_service.proto",
    "proto/tenantd/v1/operation.proto",
    "proto/tenantd/v1/operator_service.proto",
    "proto/tenantd/v1/plan_service.proto",
    "proto/tenantd/v1/quota_service.proto",
    "proto/tenantd/v1/setting_service.proto",
    "proto/tenantd/v1/tenant_service.proto",
    "proto/tenantd/v1/user_service.proto",
];

/// Vendored Google APIs tenantd serves (not its own API, so buf does not lint them).
const GOOGLE_PROTOS: [&str; 1] = ["third_party/googleapis/google/longrunning/operations.proto"];

/// The codec of the generated servers: a request that does not decode is INVALID_ARGUMENT.
const SERVER_CODEC: &str = "crate::api::codec::RequestCodec";

/// Generates each service's client with tonic-prost's codec and its server with tenantd's
/// [`SERVER_CODEC`]: a response a client cannot decode is not its request's fault, so only
/// the server maps decode failures to REQUEST_BODY_MALFORMED.
struct ClientAndServer {
    client: Box<dyn ServiceGenerator>,
    server: Box<dyn ServiceGenerator>,
}

impl ServiceGenerator for ClientAndServer {
    fn generate(&mut self, service: Service, buf: &mut String) {
        self.client.generate(service.clone(), buf);
        self.server.generate(service, buf);
    }

    fn finalize(&mut self, buf: &mut String) {
        self.client.finalize(buf);
        self.server.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.client.finalize_package(package, buf);
        self.server.finalize_package(package, buf);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc means a fresh clone builds with no system install step.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", &protoc) };
    let well_known_types = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let generator = || ClientAndServer {
        client: tonic_prost_build::configure().build_server(false).service_generator(),
        server: tonic_prost_build::configure().build_client(false).codec_path(SERVER_CODEC).service_generator(),
    };
    let google = PathBuf::from("third_party/googleapis");
    prost_build::Config::new()
        // Ordered maps: deterministic encoding and iteration.
        .btree_map(["."])
        .file_descriptor_set_path(out_dir.join("tenantd_descriptor.bin"))
        .service_generator(Box::new(generator()))
        // Generated once, below, as crate::proto::longrunning.
        .extern_path(".google.longrunning", "crate::proto::longrunning")
        .compile_protos(
            &PROTOS.map(PathBuf::from),
            &[PathBuf::from("proto"), google.clone(), well_known_types.clone()],
        )?;
    prost_build::Config::new()
        .btree_map(["."])
        .service_generator(Box::new(generator()))
        // google.rpc.Status comes from tonic-types, like the error details.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_protos(&GOOGLE_PROTOS.map(PathBuf::from), &[google, well_known_types.clone()])?;
    // The google.rpc detail messages tenantd's errors carry, for server reflection only.
    let status = std::process::Command::new(&protoc)
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out_dir.join("google_rpc_descriptor.bin").display()))
        .arg("-Ithird_party/googleapis")
        .arg(format!("-I{}", well_known_types.display()))
        .arg("google/rpc/error_details.proto")
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed on google/rpc/error_details.proto: {status}").into());
    }
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=third_party");
    Ok(())
}
