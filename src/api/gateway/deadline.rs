//! The server's RPC timeout (`TENANTD_RPC_TIMEOUT_MS`), applied server-wide in place of
//! tonic's `Server::timeout`, which bounds the whole handler future: for a client-streaming
//! upload that includes receiving every byte, so a large ImportTenant could never finish
//! within it.
//!
//! - Every RPC but ImportTenant: the handler must answer within the timeout, exactly as with
//!   `Server::timeout` (the same CANCELLED "Timeout expired" from tonic's error recovery).
//! - ImportTenant: an idle timeout instead. Each frame of the upload must arrive within the
//!   timeout of the previous one (or of the call's start); a stalled upload ends with
//!   DEADLINE_EXCEEDED `UPLOAD_STALLED`, which the handler sees as the stream's error, so it
//!   deletes what it stored. The whole call is bounded only by the client's own `grpc-timeout`,
//!   which tonic enforces on every call whether or not a server timeout is set.

use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{StreamExt, stream};
use http_body_util::{BodyStream, StreamBody};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::error::{Error, Reason};

/// The path whose request stream gets the idle timeout instead of the call timeout.
pub const IMPORT_TENANT_PATH: &str = "/tenantd.v1.TenantService/ImportTenant";

/// Builds [`Deadline`] services.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// Every call answers within `timeout`; an ImportTenant upload's frames come within it.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { timeout: self.timeout, inner }
    }
}

/// A server behind the [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    timeout: Duration,
    inner: S,
}

impl<S, ResponseBody> Service<http::Request<Body>> for Deadline<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResponseBody>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let timeout = self.timeout;
        if request.uri().path() == IMPORT_TENANT_PATH {
            let response = self.inner.call(request.map(|body| idle_timeout(body, timeout)));
            return Box::pin(async move { response.await.map_err(Into::into) });
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(timeout, response).await {
                Ok(answer) => answer.map_err(Into::into),
                Err(_) => Err(tonic::TimeoutExpired(()).into()),
            }
        })
    }
}

/// `body`, ending with DEADLINE_EXCEEDED `UPLOAD_STALLED` when no frame comes for `idle`.
fn idle_timeout(body: Body, idle: Duration) -> Body {
    let frames = stream::unfold(Some(BodyStream::new(body)), move |state| async move {
        let mut frames = state?;
        match tokio::time::timeout(idle, frames.next()).await {
            Ok(Some(Ok(frame))) => Some((Ok(frame), Some(frames))),
            Ok(Some(Err(status))) => Some((Err(status), None)),
            Ok(None) => None,
            Err(_) => Some((Err(tonic::Status::from(Error::new(Reason::UploadStalled))), None)),
        }
    });
    Body::new(StreamBody::new(frames))
}
