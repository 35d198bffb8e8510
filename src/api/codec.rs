//! The codec of tenantd's generated servers (build.rs names it in the generated code):
//! prost encoding, and a decoder that answers a request message that does not decode
//! (invalid UTF-8 in a `string` field, a truncated varint, a wrong wire type) with
//! INVALID_ARGUMENT and reason REQUEST_BODY_MALFORMED instead of tonic-prost's INTERNAL.
//! A body that does not decode is the caller's mistake, not a bug of the server.
//!
//! The decode failure is recognised by its type, [`prost::DecodeError`], where it happens,
//! and the status is built from an [`Error`], so the code is still decided in
//! [`crate::error`]. Generated clients keep tonic-prost's codec: a response a client cannot
//! decode is not its request's fault.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::error::{Error, Reason};

/// The field violation's field: the request message as a whole.
pub const REQUEST_FIELD: &str = "request";

/// Encodes responses `T` and decodes requests `U` with prost.
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self { prost: ProstCodec::default() }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { message: PhantomData }
    }
}

/// Decodes a request message; one that does not decode is REQUEST_BODY_MALFORMED.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buffer).map(Some).map_err(|error| Status::from(malformed(&error)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The error for a request message that does not decode. prost's description names the
/// message and field that failed (`Tenant.slug: invalid string value: ...`), which helps
/// the caller and holds nothing of the server's.
fn malformed(error: &prost::DecodeError) -> Error {
    Error::invalid(
        Reason::RequestBodyMalformed,
        REQUEST_FIELD,
        format!("the request message could not be decoded ({error})"),
    )
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn a_decode_error_is_invalid_argument_with_the_reason_and_a_field_violation() {
        let error = crate::proto::Tenant::decode(&[0x0a, 0x02, 0xff, 0xfe][..]).expect_err("0xff is not UTF-8");
        let status = Status::from(malformed(&error));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(details.error_info().map(|info| info.reason.as_str()), Some("REQUEST_BODY_MALFORMED"));
        let violations = details.bad_request().map(|bad| bad.field_violations.clone()).unwrap_or_default();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, REQUEST_FIELD);
        assert!(violations[0].description.contains("could not be decoded"), "{}", violations[0].description);
        // Control: the same bytes with valid UTF-8 decode.
        assert!(crate::proto::Tenant::decode(&[0x0a, 0x02, b'o', b'k'][..]).is_ok());
    }
}
