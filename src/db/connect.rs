//! Connecting to PostgreSQL, with TLS when the URL asks for it. Every path that connects goes
//! through [`PgTarget::connect`]: the pool, the health probe and migrations.
//!
//! The URL's `sslmode` and `sslrootcert` follow libpq's names, with one deliberate difference:
//! with TLS on, the server's certificate is always verified.
//!
//! | `sslmode` | TLS | chain checked against `sslrootcert` | host name checked |
//! |---|---|---|---|
//! | absent, `disable` | no | | |
//! | `require`, `verify-full` | required | yes | yes |
//! | `verify-ca` | required | yes | no |
//! | `allow`, `prefer` | refused at start-up: they fall back to plaintext silently | | |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` (the default) for the operating
//! system's. libpq's `require` does not verify unless a root certificate file exists; here
//! it verifies like `verify-full`, so that no URL turns TLS on without verification. See
//! `docs/decisions/0013-tls.md`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What a URL asks of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext.
    Disable,
    /// TLS, the certificate chain verified, the host name not.
    VerifyCa,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

/// A parsed connection URL: where to connect and how.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    mode: TlsMode,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for PgTarget {
    /// Never shows the password.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PgTarget").field("hosts", &self.config.get_hosts()).field("mode", &self.mode).finish()
    }
}

impl PgTarget {
    /// Parses a URL (`postgres://…?sslmode=…&sslrootcert=…`) or a libpq keyword string, and
    /// reads the CA file. Errors say what is wrong and never quote the URL.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (rest, options) = take_tls_options(url);
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|error| anyhow::anyhow!("not a valid PostgreSQL URL: {error}"))?;
        let mode = match options.sslmode.as_deref() {
            None | Some("disable") => TlsMode::Disable,
            Some("require" | "verify-full") => TlsMode::VerifyFull,
            Some("verify-ca") => TlsMode::VerifyCa,
            Some(weak @ ("allow" | "prefer")) => anyhow::bail!(
                "sslmode={weak} may fall back to plaintext without saying so; use sslmode=verify-full (or require, \
                 verify-ca) for TLS, or sslmode=disable"
            ),
            Some(other) => anyhow::bail!("sslmode={other} is not one of disable, require, verify-ca, verify-full"),
        };
        let tls = match mode {
            TlsMode::Disable => {
                anyhow::ensure!(
                    options.sslrootcert.is_none(),
                    "sslrootcert is set but sslmode does not turn TLS on; add sslmode=verify-full"
                );
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(MakeRustlsConnect::new(client_config(mode, options.sslrootcert)?))
            }
        };
        Ok(Self { config, mode, tls })
    }

    /// What the URL asked of TLS.
    pub fn tls_mode(&self) -> TlsMode {
        self.mode
    }

    /// Opens one connection, with TLS if the URL asked for it.
    pub async fn connect(&self) -> diesel::ConnectionResult<AsyncPgConnection> {
        let refused = |error: tokio_postgres::Error| ConnectionError::BadConnection(describe(&error));
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await.map_err(refused)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(refused)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

/// The error with its causes (tokio-postgres's own text is only "db error" or "error
/// performing TLS handshake"); PostgreSQL's and rustls's messages carry no password.
fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The TLS options tenantd handles itself, and the URL without them.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsOptions {
    sslmode: Option<String>,
    /// `None` or `system`: the system's CA certificates.
    sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a keyword string (tokio-postgres
/// knows neither `verify-*` nor `sslrootcert`).
fn take_tls_options(url: &str) -> (String, TlsOptions) {
    let mut options = TlsOptions::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let rest = if is_url {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        !take_option(&mut options, key, &percent_decode(value))
                    })
                    .collect();
                if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
            }
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take_option(&mut options, key, value.trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, options)
}

/// Records `key=value` if it is one of [`TlsOptions`]; whether it was.
fn take_option(options: &mut TlsOptions, key: &str, value: &str) -> bool {
    let slot = match key {
        "sslmode" => &mut options.sslmode,
        "sslrootcert" => &mut options.sslrootcert,
        _ => return false,
    };
    *slot = Some(value.to_owned());
    true
}

/// Decodes `%XX` escapes (a file path in a URL query may carry them); anything malformed is
/// kept as it is.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| value.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A rustls client configuration that verifies as `mode` says, against `sslrootcert`.
fn client_config(mode: TlsMode, sslrootcert: Option<String>) -> anyhow::Result<ClientConfig> {
    let ca_file = sslrootcert.filter(|value| value != "system").map(PathBuf::from);
    let roots = Arc::new(crate::tls::client_roots(ca_file.as_deref(), "sslrootcert")?);
    let builder = ClientConfig::builder();
    let config = match mode {
        TlsMode::VerifyCa => {
            let chain = WebPkiServerVerifier::builder(roots).build().context("building the sslrootcert verifier")?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(chain))).with_no_client_auth()
        }
        TlsMode::VerifyFull | TlsMode::Disable => builder.with_root_certificates(roots).with_no_client_auth(),
    };
    Ok(config)
}

/// `verify-ca`: the webpki verifier, whose host-name mismatch alone is forgiven. webpki checks
/// the chain (signature, validity, usage) before the name, so a name error means the chain
/// passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(sslmode: Option<&str>, sslrootcert: Option<&str>) -> TlsOptions {
        TlsOptions { sslmode: sslmode.map(str::to_owned), sslrootcert: sslrootcert.map(str::to_owned) }
    }

    #[test]
    fn tls_options_are_taken_out_of_a_url_and_the_rest_is_kept() {
        let (rest, taken) = take_tls_options(
            "postgres://app:pw@db:5432/app?application_name=t&sslmode=verify-ca&sslrootcert=%2Fetc%2Fca%20x.pem",
        );
        assert_eq!(rest, "postgres://app:pw@db:5432/app?application_name=t");
        assert_eq!(taken, options(Some("verify-ca"), Some("/etc/ca x.pem")));
        let (rest, taken) = take_tls_options("postgres://app@db/app?sslmode=require");
        assert_eq!(rest, "postgres://app@db/app");
        assert_eq!(taken, options(Some("require"), None));
        // Positive control: a URL without them is unchanged.
        assert_eq!(
            take_tls_options("postgres://app@db/app"),
            ("postgres://app@db/app".to_owned(), options(None, None))
        );
    }

    #[test]
    fn tls_options_are_taken_out_of_a_keyword_string() {
        let (rest, taken) = take_tls_options("host=db user=app sslmode=verify-full sslrootcert='/ca.pem' dbname=app");
        assert_eq!(rest, "host=db user=app dbname=app");
        assert_eq!(taken, options(Some("verify-full"), Some("/ca.pem")));
    }

    #[test]
    fn every_sslmode_maps_to_verification_or_plaintext_and_the_silent_fallbacks_are_refused() {
        let mode = |url: &str| PgTarget::parse(url).map(|target| target.tls_mode());
        assert_eq!(mode("postgres://app@db/app").expect("no sslmode"), TlsMode::Disable);
        assert_eq!(mode("postgres://app@db/app?sslmode=disable").expect("disable"), TlsMode::Disable);
        for url in ["postgres://app@db/app?sslmode=prefer", "postgres://app@db/app?sslmode=allow"] {
            let error = mode(url).expect_err("a silent fallback is refused").to_string();
            assert!(error.contains("fall back to plaintext"), "{error}");
        }
        let error = mode("postgres://app@db/app?sslmode=strict").expect_err("unknown").to_string();
        assert!(error.contains("sslmode=strict is not one of"), "{error}");
        let error = mode("postgres://app@db/app?sslrootcert=/ca.pem").expect_err("CA without TLS").to_string();
        assert!(error.contains("sslmode does not turn TLS on"), "{error}");
    }

    #[test]
    fn a_missing_root_certificate_file_is_named_and_the_password_is_not() {
        let error = PgTarget::parse("postgres://app:secret-pw@db/app?sslmode=verify-full&sslrootcert=/nowhere/ca.pem")
            .expect_err("no such file");
        let text = format!("{error:#}");
        assert!(text.contains("/nowhere/ca.pem"), "{text}");
        assert!(!text.contains("secret-pw"), "{text}");
        let target = PgTarget::parse("postgres://app:secret-pw@db/app").expect("plaintext parses");
        assert!(!format!("{target:?}").contains("secret-pw"));
    }

    #[test]
    fn percent_escapes_are_decoded_and_malformed_ones_kept() {
        assert_eq!(percent_decode("%2Fa%20b"), "/a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
