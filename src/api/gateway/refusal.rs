//! Answering a request in the gateway, before its service runs (an admission or a rate-limit
//! refusal), without making the connection pay for it.
//!
//! Answering before the request's body is read leaves HTTP/2 to reset the stream, and the
//! client's body frames still in flight then arrive on a stream the server has reset. Once
//! h2 no longer remembers it (it keeps only a few recently reset streams), each such frame
//! is a protocol error that h2 counts, over the connection's whole life; past 1,024 it ends
//! the connection with GOAWAY (ENHANCE_YOUR_CALM, `too_many_internal_resets`), failing every
//! request in flight on it, admitted ones included. A client mostly refused by its rate
//! limit hit that after some thousands of refusals (`refusals::` in the API tests). So a
//! refusal first reads what is left of the request's body, a little of it and briefly: a
//! gRPC request is usually one message that has arrived with its headers, and a refused
//! caller is not owed more than that.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Buf};

/// The most of a refused request's body that is read before answering.
const DRAIN_BYTES: usize = 64 * 1024;
/// How long a refusal waits for the rest of the request's body.
const DRAIN_WAIT: Duration = Duration::from_millis(100);

/// The response to `request` refused with `status`, once its body has ended (or
/// [`DRAIN_BYTES`] of it were read, or [`DRAIN_WAIT`] passed).
pub(super) async fn refuse<B>(request: http::Request<B>, status: tonic::Status) -> http::Response<tonic::body::Body>
where
    B: Body + Send,
{
    let body = std::pin::pin!(request.into_body());
    let _ = tokio::time::timeout(DRAIN_WAIT, drain(body)).await;
    status.into_http()
}

async fn drain<B: Body>(mut body: std::pin::Pin<&mut B>) {
    let mut read = 0;
    while read <= DRAIN_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Buf::remaining),
            Some(Err(_)) | None => return,
        }
    }
}
