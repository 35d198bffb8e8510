//! The platform token, compared in constant time.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Checks bearer tokens against the platform token.
#[derive(Clone)]
pub struct PlatformAuth {
    token: SecretString,
}

impl PlatformAuth {
    /// Accepts `token`. An empty token would accept an empty bearer, so it is refused.
    pub fn new(token: SecretString) -> anyhow::Result<Self> {
        anyhow::ensure!(!token.expose_secret().is_empty(), "TENANTD_PLATFORM_TOKEN must not be empty");
        Ok(Self { token })
    }

    /// Whether `presented` is the platform token. Constant time in the token's content
    /// (its length may leak, which reveals nothing useful about a long random token).
    pub fn verify(&self, presented: &[u8]) -> bool {
        bool::from(presented.ct_eq(self.token.expose_secret().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::auth::{Credential, credential};
    use crate::error::Reason;

    fn auth() -> PlatformAuth {
        PlatformAuth::new(SecretString::from("s3cret")).expect("non-empty token")
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
        assert!(matches!(credential(&headers(&["Bearer s3cret"]), &auth()), Ok(Credential::Platform)));
        assert!(matches!(credential(&headers(&["bearer s3cret"]), &auth()), Ok(Credential::Platform)));
    }

    #[test]
    fn wrong_missing_repeated_and_malformed_credentials_are_refused() {
        let reason = |values: &[&str]| credential(&headers(values), &auth()).err().map(|error| error.reason());
        assert_eq!(reason(&["Bearer nope"]), Some(Reason::CredentialsInvalid));
        assert_eq!(reason(&[]), Some(Reason::CredentialsMissing));
        assert_eq!(reason(&["Bearer s3cret", "Bearer s3cret"]), Some(Reason::CredentialsAmbiguous));
        assert_eq!(reason(&["Basic s3cret"]), Some(Reason::CredentialsMalformed));
        assert_eq!(reason(&["Bearer "]), Some(Reason::CredentialsMalformed));
        assert_eq!(reason(&["Bearer tdk_short"]), Some(Reason::ApiKeyMalformed));
    }
}
