//! Reaching the server and saying what went wrong: the connection with its timeouts, the
//! platform credential on every call, and each [`Failure`] printed on stderr with the exit status
//! the policy in [`crate::client`] gives it.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use secrecy::ExposeSecret;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::args::{self, ClientArgs, ServerArgs};
use super::output::{self, Shown};
use super::{EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE};
use crate::proto::longrunning::operations_client::OperationsClient;
use crate::proto::operator_service_client::OperatorServiceClient;
use crate::proto::tenant_service_client::TenantServiceClient;

/// The `authorization` value of a bearer credential, marked sensitive (never printed).
pub(super) fn authorization(credential: &str) -> Result<MetadataValue<Ascii>, Failure> {
    let mut value: MetadataValue<Ascii> = format!("Bearer {credential}")
        .parse()
        .map_err(|_| Failure::Usage("the credential has characters a header cannot carry".to_owned()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// How long establishing the connection may take: short, so `health` suits a healthcheck.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one API call may take once connected (also sent to the server as `grpc-timeout`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client command did not get its answer.
pub(super) enum Failure {
    /// The server answered with an error status.
    Status(Status),
    /// The server could not be reached, or did not answer in time.
    Unreachable(String),
    /// The command line cannot be used as given.
    Usage(String),
}

impl Failure {
    /// A status the server sent, or, when the status has a source, a failure of the client's
    /// transport (for example a TLS handshake the server refused), with its causes.
    pub(super) fn from_status(status: Status) -> Self {
        if std::error::Error::source(&status).is_some() {
            return Self::Unreachable(format!("{}: {}", status.message(), error_chain(&status)));
        }
        Self::Status(status)
    }

    /// Prints the failure on stderr and returns the matching exit status.
    pub(super) fn report(self) -> ExitCode {
        let mut stderr = std::io::stderr().lock();
        match self {
            Self::Status(status) => {
                let _ = write!(stderr, "{}", describe_status(&status));
                ExitCode::from(EXIT_REFUSED)
            }
            Self::Unreachable(message) => {
                let _ = writeln!(stderr, "error: cannot reach the server: {message}");
                ExitCode::from(EXIT_UNREACHABLE)
            }
            Self::Usage(message) => {
                let _ = writeln!(stderr, "error: {message}");
                ExitCode::from(EXIT_UNREACHABLE)
            }
        }
    }
}

/// Prints the result, or the failure, and returns the exit status.
pub(super) fn finish(result: Result<Shown, Failure>, format: args::OutputFormat) -> ExitCode {
    match result {
        Ok(shown) => {
            output::print(&shown, format);
            ExitCode::from(EXIT_OK)
        }
        Err(failure) => failure.report(),
    }
}

/// `error: CODE: message`, then the ErrorInfo reason and metadata and any field violations,
/// one per line.
pub(super) fn describe_status(status: &Status) -> String {
    let mut text = format!("error: {}: {}\n", code_name(status.code()), status.message());
    let details = status.get_error_details();
    if let Some(info) = details.error_info() {
        text.push_str(&format!("  reason: {}\n", info.reason));
        for (key, value) in &info.metadata {
            text.push_str(&format!("  {key}: {value}\n"));
        }
    }
    if let Some(bad_request) = details.bad_request() {
        for violation in &bad_request.field_violations {
            text.push_str(&format!("  field {}: {}\n", violation.field, violation.description));
        }
    }
    text
}

/// The canonical name of a gRPC code, as grpcurl and the gRPC docs write it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Connects to `--server`, for at most [`CONNECT_TIMEOUT`]. `host:port` without a scheme means
/// plaintext `http://host:port`; `https://` means TLS, verified against `--tls-ca-file` or the
/// system's CA certificates.
pub(super) async fn connect(server: &ServerArgs) -> Result<Channel, Failure> {
    let address = &server.server;
    let uri = if address.contains("://") { address.clone() } else { format!("http://{address}") };
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|error| Failure::Usage(format!("--server `{address}` is not a valid address: {error}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    let endpoint = if uri.starts_with("https://") {
        endpoint.tls_config(tls_config(server)?).map_err(|error| Failure::Usage(error_chain(&error)))?
    } else if server.tls_ca_file.is_some() || server.tls_cert_file.is_some() {
        return Err(Failure::Usage(format!(
            "TLS files are given but --server `{address}` is plaintext; use https://{}",
            address.trim_start_matches("http://")
        )));
    } else {
        endpoint
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(Failure::Unreachable(format!("{address}: {}", error_chain(&error)))),
        Err(_) => Err(Failure::Unreachable(format!("{address}: no connection within {}s", CONNECT_TIMEOUT.as_secs()))),
    }
}

/// The client's TLS: the CA to trust (or the system's), and a client certificate if given.
fn tls_config(server: &ServerArgs) -> Result<ClientTlsConfig, Failure> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| Failure::Usage(format!("reading {}: {error}", path.display())))
    };
    crate::tls::install_crypto_provider();
    let mut config = ClientTlsConfig::new();
    config = match &server.tls_ca_file {
        Some(path) => config.ca_certificate(Certificate::from_pem(read(path)?)),
        None => config.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&server.tls_cert_file, &server.tls_key_file) {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(config)
}

/// An error's sources, `: `-separated (tonic's transport error itself says only "transport
/// error", and hyper repeats some messages at two levels).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if messages.last() != Some(&message) {
            messages.push(message);
        }
        source = cause.source();
    }
    if messages.is_empty() { error.to_string() } else { messages.join(": ") }
}

/// A TenantService client that sends the platform credential, connected to `--server`.
pub(super) async fn tenant_client(
    args: &ClientArgs,
) -> Result<TenantServiceClient<InterceptedService<Channel, Bearer>>, Failure> {
    let (channel, bearer) = authorized(args).await?;
    Ok(TenantServiceClient::with_interceptor(channel, bearer))
}

/// An OperatorService client that sends the platform credential, connected to `--server`.
pub(super) async fn operator_client(
    args: &ClientArgs,
) -> Result<OperatorServiceClient<InterceptedService<Channel, Bearer>>, Failure> {
    let (channel, bearer) = authorized(args).await?;
    Ok(OperatorServiceClient::with_interceptor(channel, bearer))
}

/// A google.longrunning.Operations client with the platform credential.
pub(super) async fn operations_client(
    args: &ClientArgs,
) -> Result<OperationsClient<InterceptedService<Channel, Bearer>>, Failure> {
    let (channel, bearer) = authorized(args).await?;
    Ok(OperationsClient::with_interceptor(channel, bearer))
}

/// The platform credential (an operator key or the bootstrap token) as a header, and a
/// channel to `--server`.
async fn authorized(args: &ClientArgs) -> Result<(Channel, Bearer), Failure> {
    let token = args.token.as_ref().ok_or_else(|| {
        Failure::Usage("no platform credential: pass --token or set TENANTD_PLATFORM_TOKEN".to_owned())
    })?;
    let authorization = authorization(token.expose_secret())?;
    let channel = connect(&args.server).await?;
    Ok((channel, Bearer(authorization)))
}

/// Adds `authorization: Bearer <token>` and the call's deadline to every request.
#[derive(Clone)]
pub(super) struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        // A transfer (an archive's download or upload) sets a longer deadline of its own.
        if !request.metadata().contains_key("grpc-timeout") {
            request.set_timeout(CALL_TIMEOUT);
        }
        Ok(request)
    }
}

/// Awaits one call for at most [`CALL_TIMEOUT`].
pub(super) async fn call<T>(response: impl Future<Output = Result<tonic::Response<T>, Status>>) -> Result<T, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, response).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Failure::from_status(status)),
        Err(_) => Err(Failure::Unreachable(format!("no answer within {}s", CALL_TIMEOUT.as_secs()))),
    }
}
