//! Page sizes and page tokens (AIP-158).
//!
//! A token is opaque to clients: base64url of a version byte, the scope it was issued for
//! (the tenant, or nil for the control plane), the list filter, and the last id returned.
//! A token from another scope or another filter is rejected with INVALID_ARGUMENT. Tokens
//! are not signed: a forged cursor can only move within the caller's own scope, which RLS
//! (data plane) or platform authority (control plane) already grants.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::{Error, Result};

const VERSION: u8 = 1;
const ENCODED_LENGTH: usize = 1 + 16 + 1 + 16;

/// Page size when a request gives 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page returned; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// Validates `page_size`: negative is INVALID_ARGUMENT, 0 is the default, large is clamped.
pub fn page_size(requested: i32) -> Result<i64> {
    match requested {
        size if size < 0 => Err(Error::invalid("PAGE_SIZE_INVALID", "page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        size => Ok(i64::from(size).min(MAX_PAGE_SIZE)),
    }
}

/// Where a list continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// The tenant (or nil) the token was issued to.
    pub scope: Uuid,
    /// The list filter the token was issued for.
    pub filter: u8,
    /// The last id of the previous page.
    pub after: Uuid,
}

impl PageToken {
    /// Encodes the token for `next_page_token`.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(ENCODED_LENGTH);
        bytes.push(VERSION);
        bytes.extend_from_slice(self.scope.as_bytes());
        bytes.push(self.filter);
        bytes.extend_from_slice(self.after.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a request's `page_token`; empty means the first page. The token must have
    /// been issued for `scope` and `filter`.
    pub fn decode(token: &str, scope: Uuid, filter: u8) -> Result<Option<Uuid>> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = |description: &str| Error::invalid("PAGE_TOKEN_INVALID", "page_token", description);
        // Bound the work before decoding: a valid token has a fixed length.
        if token.len() > 64 {
            return Err(invalid("is not a page token from this list"));
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid("is not a page token from this list"))?;
        let [version, rest @ ..] = bytes.as_slice() else {
            return Err(invalid("is not a page token from this list"));
        };
        if *version != VERSION || rest.len() != ENCODED_LENGTH - 1 {
            return Err(invalid("is not a page token from this list"));
        }
        let token_scope = Uuid::from_slice(&rest[..16]).map_err(|_| invalid("is not a page token from this list"))?;
        let token_filter = rest[16];
        let after = Uuid::from_slice(&rest[17..]).map_err(|_| invalid("is not a page token from this list"))?;
        if token_scope != scope || token_filter != filter {
            return Err(invalid("was issued for a different list or filter"));
        }
        Ok(Some(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_in_its_own_scope_only() {
        let scope = Uuid::now_v7();
        let token = PageToken { scope, filter: 2, after: Uuid::now_v7() };
        let encoded = token.encode();
        assert_eq!(PageToken::decode(&encoded, scope, 2).ok(), Some(Some(token.after)));
        assert!(PageToken::decode(&encoded, Uuid::now_v7(), 2).is_err());
        assert!(PageToken::decode(&encoded, scope, 1).is_err());
        assert!(PageToken::decode(&encoded[..10], scope, 2).is_err());
        assert!(PageToken::decode("%%%", scope, 2).is_err());
    }

    #[test]
    fn page_sizes_are_defaulted_clamped_and_never_negative() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(5).ok(), Some(5));
        assert_eq!(page_size(i32::MAX).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
