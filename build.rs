//! Compiles `proto/` into Rust at build time; generated code is never committed.

use std::path::PathBuf;

const PROTOS: [&str; 6] = [
    "proto/tenantd/v1/audit.proto",
    "proto/tenantd/v1/diagnostics_service.proto",
    "proto/tenantd/v1/document_service.proto",
    "proto/tenantd/v1/setting_service.proto",
    "proto/tenantd/v1/tenant_service.proto",
    "proto/tenantd/v1/user_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc means a fresh clone builds with no system install step.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let well_known_types = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Ordered maps: deterministic encoding and iteration.
        .btree_map(".")
        .file_descriptor_set_path(out_dir.join("tenantd_descriptor.bin"))
        .compile_protos(&PROTOS.map(PathBuf::from), &[PathBuf::from("proto"), well_known_types])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
