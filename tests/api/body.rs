//! A request body that does not decode is the caller's mistake: INVALID_ARGUMENT with
//! reason REQUEST_BODY_MALFORMED, never INTERNAL, and no server error in the log. The
//! bodies are sent as raw bytes in a gRPC frame, through tonic's `Grpc` client with a codec
//! that passes bytes through, so they can be anything.

use prost::Message;
use prost::bytes::{Buf, BufMut};
use tenantd::proto::{CreateTenantRequest, CreateUserRequest, Tenant, User};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{PLATFORM_TOKEN, reason, unique_slug};
use crate::logs::{LoggedServer, span_field, with_message};

/// Sends and receives message bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buffer: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buffer.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buffer.copy_to_bytes(buffer.remaining()).to_vec()))
    }
}

/// Calls `path` with `body` as the request message, platform token and `metadata`.
async fn call_raw(
    channel: &Channel,
    path: &'static str,
    body: Vec<u8>,
    metadata: &[(&'static str, &str)],
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|error| Status::unavailable(error.to_string()))?;
    let mut request = tonic::Request::new(body);
    let bearer: MetadataValue<_> = format!("Bearer {PLATFORM_TOKEN}").parse().expect("ASCII");
    request.metadata_mut().insert("authorization", bearer);
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().expect("ASCII"));
    }
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(request, path, RawCodec).await.map(tonic::Response::into_inner)
}

/// `message` encoded, with the bytes of `marker` (a value of a `string` field) replaced by
/// as many 0xFF bytes, which are not UTF-8.
fn with_invalid_utf8(message: &impl Message, marker: &str) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    let start = bytes.windows(marker.len()).position(|window| window == marker.as_bytes()).expect("the marker");
    bytes[start..start + marker.len()].fill(0xff);
    bytes
}

#[track_caller]
fn assert_malformed_body(status: &Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(status), "REQUEST_BODY_MALFORMED", "{status:?}");
    let violations = status.get_error_details().bad_request().map(|bad| bad.field_violations.clone());
    let violations = violations.unwrap_or_default();
    assert_eq!(violations.len(), 1, "{status:?}");
    assert!(violations[0].description.contains("could not be decoded"), "{status:?}");
}

#[tokio::test]
async fn an_undecodable_request_body_is_invalid_argument_request_body_malformed_and_logs_no_error() {
    let server = LoggedServer::start().await;
    let marker = "zzmarkerzz";
    let create_tenant = |slug: &str| CreateTenantRequest {
        tenant: Some(Tenant { slug: slug.to_owned(), display_name: "Raw".into(), ..Default::default() }),
        request_id: String::new(),
    };
    const CREATE_TENANT: &str = "/tenantd.v1.TenantService/CreateTenant";

    // Control: the raw client sends a valid body and the server creates the tenant.
    let valid = create_tenant(&unique_slug("raw")).encode_to_vec();
    let created = call_raw(&server.channel, CREATE_TENANT, valid, &[("x-request-id", "raw-valid")]).await;
    let tenant = Tenant::decode(created.expect("a valid body is served").as_slice()).expect("a tenant");

    let control_plane = with_invalid_utf8(&create_tenant(marker), marker);
    let status = call_raw(&server.channel, CREATE_TENANT, control_plane, &[("x-request-id", "raw-bad-tenant")])
        .await
        .expect_err("the slug is not UTF-8");
    assert_malformed_body(&status);

    // The data plane's servers decode the same way (admission runs first, and admits).
    let user = CreateUserRequest {
        user: Some(User { email: format!("{marker}@raw.example"), ..Default::default() }),
        request_id: String::new(),
    };
    let metadata = [("x-request-id", "raw-bad-user"), ("x-tenant-id", tenant.id.as_str())];
    let status =
        call_raw(&server.channel, "/tenantd.v1.UserService/CreateUser", with_invalid_utf8(&user, marker), &metadata)
            .await
            .expect_err("the email is not UTF-8");
    assert_malformed_body(&status);
    // Garbage that is not protobuf at all (a length-delimited field longer than the body).
    let status = call_raw(&server.channel, CREATE_TENANT, vec![0x0a, 0x7f, 0x01], &[("x-request-id", "raw-garbage")])
        .await
        .expect_err("truncated");
    assert_malformed_body(&status);

    for request_id in ["raw-bad-tenant", "raw-bad-user", "raw-garbage"] {
        let lines = server.request_lines(request_id).await;
        let finished = with_message(&lines, "rpc finished");
        assert_eq!(finished.len(), 1, "{lines:#?}");
        assert_eq!(finished[0]["grpc.code"], "3", "counted as INVALID_ARGUMENT: {lines:#?}");
    }
    let valid = server.request_lines("raw-valid").await;
    assert_eq!(with_message(&valid, "rpc finished")[0]["grpc.code"], "0", "control: {valid:#?}");
    let errors: Vec<_> = server.lines().into_iter().filter(|line| line["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "a malformed body is not a server error: {errors:#?}");
    let user_line = with_message(&server.request_lines("raw-bad-user").await, "rpc finished")[0].clone();
    assert_eq!(span_field(&user_line, "tenant.id"), Some(tenant.id.as_str()));
    server.stop().await;
}
