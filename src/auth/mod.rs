//! Authentication: operator keys and the bootstrap token (platform callers) and tenant API
//! keys, all sent as `authorization: Bearer <credential>`. Secrets are never logged.

pub mod api_key;
mod encoding;
pub mod operator_key;
mod platform;

use http::HeaderMap;

pub use platform::PlatformAuth;

use crate::error::{Error, Reason, Result};

/// A credential parsed from the `authorization` metadata, before any I/O.
#[derive(Debug)]
pub enum Credential {
    /// The bootstrap platform token (already verified, in constant time).
    Bootstrap,
    /// A well-formed operator key (checksum verified; not yet looked up).
    Operator(operator_key::OperatorKeyToken),
    /// A well-formed tenant API key (checksum verified; not yet looked up).
    ApiKey(api_key::ApiKeyToken),
}

/// Reads the single `authorization: Bearer <credential>` value and classifies it: an API
/// key or an operator key (by its prefix, with its checksum checked) or the bootstrap
/// token (refused when none is configured).
pub fn credential(headers: &HeaderMap, platform: &PlatformAuth) -> Result<Credential> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Error::new(Reason::CredentialsMissing));
    };
    if values.next().is_some() {
        return Err(Error::new(Reason::CredentialsAmbiguous));
    }
    let presented = bearer_token(value.as_bytes()).ok_or(Error::new(Reason::CredentialsMalformed))?;
    if presented.starts_with(api_key::PREFIX.as_bytes()) {
        let text = std::str::from_utf8(presented).map_err(|_| Error::new(Reason::ApiKeyMalformed))?;
        return match api_key::ApiKeyToken::parse(text) {
            Ok(token) => Ok(Credential::ApiKey(token)),
            Err(api_key::FormatError::Malformed) => Err(Error::new(Reason::ApiKeyMalformed)),
            Err(api_key::FormatError::Checksum) => Err(Error::new(Reason::ApiKeyChecksumMismatch)),
        };
    }
    if presented.starts_with(operator_key::PREFIX.as_bytes()) {
        let text = std::str::from_utf8(presented).map_err(|_| Error::new(Reason::OperatorKeyMalformed))?;
        return match operator_key::OperatorKeyToken::parse(text) {
            Ok(token) => Ok(Credential::Operator(token)),
            Err(operator_key::FormatError::Malformed) => Err(Error::new(Reason::OperatorKeyMalformed)),
            Err(operator_key::FormatError::Checksum) => Err(Error::new(Reason::OperatorKeyChecksumMismatch)),
        };
    }
    if platform.verify(presented) { Ok(Credential::Bootstrap) } else { Err(Error::new(Reason::CredentialsInvalid)) }
}

/// The token of a `Bearer <token>` value; the scheme is case-insensitive (RFC 6750).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}
