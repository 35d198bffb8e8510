//! The gRPC server's TLS: a rustls configuration built from the certificate, key and
//! (for mTLS) client-CA files, rebuilt when they change on disk, and the stream of accepted,
//! handshaken connections that tonic serves.
//!
//! tonic's own TLS cannot change its certificate without a restart, so tenantd accepts TCP
//! itself and hands tonic finished TLS streams (`serve_with_incoming`). Each handshake runs in
//! a task of its own with a timeout, so a slow or silent client holds up nobody else. A failed
//! handshake is the client's problem: it is logged at DEBUG, and at most once a minute at WARN.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::config::TlsConfig;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one WARN about failed handshakes per this period; the rest go to DEBUG.
const HANDSHAKE_WARN_PERIOD: Duration = Duration::from_secs(60);

/// The server's current TLS configuration, and what it was built from.
pub struct ReloadingTls {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// SHA-256 of the files' contents the current configuration was built from (a digest, so
    /// no copy of the private key is kept).
    loaded_digest: Mutex<[u8; 32]>,
    /// The reload failure last logged, so a file that stays broken is logged once.
    warned_reload: Mutex<Option<String>>,
    failures: HandshakeFailures,
}

/// What one look at the files found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files are as they were.
    Unchanged,
    /// The files changed and the new configuration serves new connections.
    Reloaded,
    /// The files changed but cannot be used; the previous configuration stays.
    Failed,
}

impl ReloadingTls {
    /// Loads the files. At start-up every problem is an error that names the file.
    pub fn load(files: &TlsConfig) -> anyhow::Result<Self> {
        let contents = FileContents::read(files)?;
        let config = contents.server_config(files)?;
        Ok(Self {
            files: files.clone(),
            current: RwLock::new(Arc::new(config)),
            loaded_digest: Mutex::new(contents.digest()),
            warned_reload: Mutex::new(None),
            failures: HandshakeFailures::default(),
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        TlsAcceptor::from(config)
    }

    /// Reads the files and, if their contents changed, rebuilds the configuration. A failure
    /// keeps the previous configuration and logs a WARN (once per cause); connections already
    /// open are never touched.
    pub fn reload_if_changed(&self) -> Reload {
        let built = FileContents::read(&self.files).and_then(|contents| {
            let digest = contents.digest();
            if *self.loaded_digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) == digest {
                return Ok(None);
            }
            Ok(Some((contents.server_config(&self.files)?, digest)))
        });
        let mut warned = self.warned_reload.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match built {
            Ok(None) => Reload::Unchanged,
            Ok(Some((config, digest))) => {
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
                *self.loaded_digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = digest;
                *warned = None;
                tracing::info!(cert_file = %self.files.cert_file.display(), "tls certificate reloaded");
                Reload::Reloaded
            }
            Err(error) => {
                let cause = format!("{error:#}");
                if warned.as_deref() != Some(cause.as_str()) {
                    tracing::warn!(error = %cause, "tls reload failed; serving the previous certificate");
                    *warned = Some(cause);
                }
                Reload::Failed
            }
        }
    }

    /// Looks at the files every reload interval until `stop` is cancelled.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let interval = self.files.reload_interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = stop.cancelled() => return,
            }
            let tls = self.clone();
            // File reads and parsing are blocking work.
            let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
        }
    }

    /// The TLS connections accepted from `listener`, until `stop` is cancelled: each TCP
    /// connection is handshaken in a task of its own; failures are logged and dropped, accept
    /// errors passed on to tonic as they would be without TLS.
    pub fn incoming(
        self: Arc<Self>,
        mut listener: TcpIncoming,
        stop: CancellationToken,
    ) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.next() => accepted,
                    () = stop.cancelled() => return,
                };
                let tcp = match accepted {
                    Some(Ok(tcp)) => tcp,
                    Some(Err(error)) => {
                        if sender.send(Err(error)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    None => return,
                };
                let (tls, sender) = (self.clone(), sender.clone());
                tokio::spawn(async move {
                    let peer = tcp.peer_addr().ok();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok(stream)).await;
                        }
                        Ok(Err(error)) => tls.failures.record(peer, &error),
                        Err(_elapsed) => tls.failures.record(peer, &"no handshake within 10 s"),
                    }
                });
            }
        });
        ReceiverStream::new(receiver)
    }
}

/// The bytes of the certificate, key and client-CA files.
struct FileContents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl FileContents {
    fn read(files: &TlsConfig) -> anyhow::Result<Self> {
        Ok(Self {
            cert: super::read_file(&files.cert_file, "the TLS certificate file")?,
            key: super::read_file(&files.key_file, "the TLS key file")?,
            client_ca: files
                .client_ca_file
                .as_deref()
                .map(|path| super::read_file(path, "the TLS client CA file"))
                .transpose()?,
        })
    }

    fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let part = part.map(Vec::as_slice).unwrap_or_default();
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.finalize().into()
    }

    /// A server configuration offering HTTP/2 (gRPC clients such as grpc-go require ALPN), and
    /// requiring a client certificate signed by the client CA when there is one.
    fn server_config(&self, files: &TlsConfig) -> anyhow::Result<ServerConfig> {
        let chain = super::parse_certificates(&self.cert, &files.cert_file)?;
        let key = super::parse_private_key(&self.key, &files.key_file)?;
        let builder = ServerConfig::builder();
        let builder = match (&self.client_ca, &files.client_ca_file) {
            (Some(pem), Some(path)) => {
                let mut roots = rustls::RootCertStore::empty();
                for certificate in super::parse_certificates(pem, path)? {
                    roots.add(certificate).map_err(|error| not_a_ca(path, &error))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder(Arc::new(roots)).build().map_err(|error| not_a_ca(path, &error))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|error| {
            anyhow::anyhow!(
                "the TLS key {} does not fit the certificate {}: {error}",
                files.key_file.display(),
                files.cert_file.display()
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn not_a_ca(path: &Path, error: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{} is not a usable client CA file: {error}", path.display())
}

/// Counts failed handshakes between WARN lines.
#[derive(Default)]
struct HandshakeFailures {
    state: Mutex<FailureWindow>,
}

#[derive(Default)]
struct FailureWindow {
    last_warned: Option<Instant>,
    since_warned: u64,
}

impl HandshakeFailures {
    /// Logs one failure: always at DEBUG, at WARN if none was in the last minute (with how
    /// many were not). rustls errors name what failed (an unknown CA, an expired
    /// certificate, a protocol error), never key material.
    fn record(&self, peer: Option<std::net::SocketAddr>, error: &dyn std::fmt::Display) {
        let peer = peer.map(|address| address.to_string()).unwrap_or_default();
        tracing::debug!(peer = %peer, error = %error, "tls handshake failed");
        let mut window = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = window.last_warned.is_none_or(|at| at.elapsed() >= HANDSHAKE_WARN_PERIOD);
        if due {
            tracing::warn!(
                peer = %peer,
                error = %error,
                failed_since_last_warning = window.since_warned,
                "tls handshake failed (further failures within a minute are logged at DEBUG)"
            );
            window.last_warned = Some(Instant::now());
            window.since_warned = 0;
        } else {
            window.since_warned += 1;
        }
    }
}
