//! The bootstrap platform token, compared in constant time. It exists to create the first
//! operator; a deployment that has its operators can turn it off by not configuring it.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Checks bearer tokens against the bootstrap token, if there is one.
#[derive(Clone)]
pub struct PlatformAuth {
    token: Option<SecretString>,
}

impl PlatformAuth {
    /// Accepts `token`; `None` accepts no token at all (bootstrap disabled). An empty token
    /// would accept an empty bearer, so it is refused.
    pub fn new(token: Option<SecretString>) -> anyhow::Result<Self> {
        if let Some(token) = &token {
            anyhow::ensure!(!token.expose_secret().is_empty(), "TENANTD_PLATFORM_TOKEN must not be empty");
        }
        Ok(Self { token })
    }

    /// Whether a bootstrap token is configured.
    pub fn bootstrap_enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `presented` is the bootstrap token. Constant time in the token's content
    /// (its length may leak, which reveals nothing useful about a long random token).
    pub fn verify(&self, presented: &[u8]) -> bool {
        self.token.as_ref().is_some_and(|token| bool::from(presented.ct_eq(token.expose_secret().as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::auth::{Credential, credential};
    use crate::error::Reason;

    fn auth() -> PlatformAuth {
        PlatformAuth::new(Some(SecretString::from("s3cret"))).expect("non-empty token")
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
        assert!(matches!(credential(&headers(&["Bearer s3cret"]), &auth()), Ok(Credential::Bootstrap)));
        assert!(matches!(credential(&headers(&["bearer s3cret"]), &auth()), Ok(Credential::Bootstrap)));
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
        assert_eq!(reason(&["Bearer tdo_short"]), Some(Reason::OperatorKeyMalformed));
    }

    #[test]
    fn an_operator_key_is_told_apart_by_its_prefix_and_checked_before_any_lookup() {
        let key = crate::auth::operator_key::OperatorKeyToken::generate(uuid::Uuid::now_v7()).expect("randomness");
        let text = key.encode();
        let bearer = format!("Bearer {text}");
        assert!(matches!(credential(&headers(&[&bearer]), &auth()), Ok(Credential::Operator(parsed)) if parsed == key));
        let last = text.len() - 1;
        let flipped = if text.as_bytes()[last] == b'0' { '1' } else { '0' };
        let mistyped = format!("Bearer {}{flipped}", &text[..last]);
        let reason = credential(&headers(&[&mistyped]), &auth()).err().map(|error| error.reason());
        assert_eq!(reason, Some(Reason::OperatorKeyChecksumMismatch));
    }

    #[test]
    fn with_bootstrap_disabled_no_token_is_the_platform_token() {
        let disabled = PlatformAuth::new(None).expect("no token");
        assert!(!disabled.bootstrap_enabled());
        assert!(auth().bootstrap_enabled());
        for value in ["Bearer s3cret", "Bearer x"] {
            let reason = credential(&headers(&[value]), &disabled).err().map(|error| error.reason());
            assert_eq!(reason, Some(Reason::CredentialsInvalid), "{value}");
        }
        assert!(matches!(credential(&headers(&["Bearer s3cret"]), &auth()), Ok(Credential::Bootstrap)));
    }
}
