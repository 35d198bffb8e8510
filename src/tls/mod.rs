//! TLS with rustls and its ring provider: PEM files read into rustls types (every error names
//! the file), the roots a client trusts, and, in [`server`], the gRPC server's acceptor that
//! reloads its certificate from disk.
//!
//! Clients of PostgreSQL and Redis build their configurations from [`client_roots`]; the
//! policy of what they verify is in `docs/decisions/0013-tls.md`.

use std::path::Path;

use anyhow::Context;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod server;

/// Makes ring the process's rustls provider. Idempotent; libraries that build rustls
/// configurations without naming a provider (the redis crate) take this one.
pub fn install_crypto_provider() {
    // Err only when a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads `path` (what it is for is in `what`, e.g. "the TLS certificate file").
pub(crate) fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Every PEM certificate in `pem`, which came from `path`; an error when there is none.
pub(crate) fn parse_certificates(pem: &[u8], path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    anyhow::ensure!(!certificates.is_empty(), "{} holds no PEM certificate", path.display());
    Ok(certificates)
}

/// The first PEM private key (PKCS#8, PKCS#1 or SEC1) in `pem`, which came from `path`. The
/// error never quotes the file.
pub(crate) fn parse_private_key(pem: &[u8], path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| anyhow::anyhow!("{} holds no PEM private key", path.display()))
}

/// A root store of the certificates in the PEM file `path`.
pub(crate) fn roots_from_file(path: &Path, what: &str) -> anyhow::Result<RootCertStore> {
    let pem = read_file(path, what)?;
    let mut roots = RootCertStore::empty();
    for certificate in parse_certificates(&pem, path)? {
        roots
            .add(certificate)
            .with_context(|| format!("{} holds a certificate that is not a valid CA", path.display()))?;
    }
    Ok(roots)
}

/// The roots a client of PostgreSQL or Redis trusts: the CA file's certificates, or, without
/// one, the operating system's.
pub(crate) fn client_roots(ca_file: Option<&Path>, what: &str) -> anyhow::Result<RootCertStore> {
    if let Some(path) = ca_file {
        return roots_from_file(path, what);
    }
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    anyhow::ensure!(added > 0, "no CA file given for {what} and the system has no CA certificates");
    Ok(roots)
}
