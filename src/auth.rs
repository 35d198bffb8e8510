//! Authentication of platform callers: `authorization: Bearer <platform token>`,
//! compared in constant time. The token is never logged.

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::cli::Secret;
use crate::error::{Error, Result};

/// Checks bearer tokens against the platform token.
#[derive(Clone)]
pub struct PlatformAuth {
    token: Secret,
}

impl PlatformAuth {
    /// Accepts `token`. An empty token would accept an empty bearer, so it is refused.
    pub fn new(token: Secret) -> anyhow::Result<Self> {
        anyhow::ensure!(!token.expose().is_empty(), "TENANTD_PLATFORM_TOKEN must not be empty");
        Ok(Self { token })
    }

    /// Authenticates a request from its headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<()> {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Err(Error::Unauthenticated { reason: "CREDENTIALS_MISSING" });
        };
        if values.next().is_some() {
            return Err(Error::Unauthenticated { reason: "CREDENTIALS_AMBIGUOUS" });
        }
        let presented =
            bearer_token(value.as_bytes()).ok_or(Error::Unauthenticated { reason: "CREDENTIALS_MALFORMED" })?;
        if bool::from(presented.ct_eq(self.token.expose().as_bytes())) {
            Ok(())
        } else {
            Err(Error::Unauthenticated { reason: "CREDENTIALS_INVALID" })
        }
    }
}

/// The token of a `Bearer <token>` value; the scheme is case-insensitive (RFC 6750).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> PlatformAuth {
        PlatformAuth::new(Secret::new("s3cret")).expect("non-empty token")
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(http::header::AUTHORIZATION, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn the_platform_token_is_accepted_with_any_scheme_case() {
        assert!(auth().authenticate(&headers(&["Bearer s3cret"])).is_ok());
        assert!(auth().authenticate(&headers(&["bearer s3cret"])).is_ok());
    }

    #[test]
    fn wrong_missing_repeated_and_malformed_credentials_are_refused() {
        let reason = |values: &[&str]| auth().authenticate(&headers(values)).err().map(|error| error.reason());
        assert_eq!(reason(&["Bearer nope"]), Some("CREDENTIALS_INVALID"));
        assert_eq!(reason(&[]), Some("CREDENTIALS_MISSING"));
        assert_eq!(reason(&["Bearer s3cret", "Bearer s3cret"]), Some("CREDENTIALS_AMBIGUOUS"));
        assert_eq!(reason(&["Basic s3cret"]), Some("CREDENTIALS_MALFORMED"));
        assert_eq!(reason(&["Bearer "]), Some("CREDENTIALS_MALFORMED"));
    }
}
