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

use crate::error::{Error, Reason, Result};

const VERSION: u8 = 2;
const ENCODED_LENGTH: usize = 1 + 16 + 8 + 16;

/// Page size when a request gives 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page returned; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// Validates `page_size`: negative is INVALID_ARGUMENT, 0 is the default, large is clamped.
pub fn page_size(requested: i32) -> Result<i64> {
    match requested {
        size if size < 0 => Err(Error::invalid(Reason::PageSizeInvalid, "page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        size => Ok(i64::from(size).min(MAX_PAGE_SIZE)),
    }
}

/// Where a list continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// The tenant (or nil) the token was issued to.
    pub scope: Uuid,
    /// Fingerprint of the list filter the token was issued for.
    pub filter: [u8; 8],
    /// The last id of the previous page.
    pub after: Uuid,
}

impl PageToken {
    /// Encodes the token for `next_page_token`.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(ENCODED_LENGTH);
        bytes.push(VERSION);
        bytes.extend_from_slice(self.scope.as_bytes());
        bytes.extend_from_slice(&self.filter);
        bytes.extend_from_slice(self.after.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a request's `page_token`; empty means the first page. The token must have
    /// been issued for `scope` and `filter`.
    pub fn decode(token: &str, scope: Uuid, filter: [u8; 8]) -> Result<Option<Uuid>> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = |description: &str| Error::invalid(Reason::PageTokenInvalid, "page_token", description);
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
        let token_filter = &rest[16..24];
        let after = Uuid::from_slice(&rest[24..]).map_err(|_| invalid("is not a page token from this list"))?;
        if token_scope != scope || token_filter != filter.as_slice() {
            return Err(invalid("was issued for a different list or filter"));
        }
        Ok(Some(after))
    }
}

/// A short fingerprint of a list's filter, recorded in its page tokens.
pub fn fingerprint(filter: &str) -> [u8; 8] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(filter.as_bytes());
    let mut print = [0u8; 8];
    print.copy_from_slice(&digest[..8]);
    print
}

/// Pops the look-ahead row, if any, and returns the token of the page after `rows`.
pub fn next_token<T>(
    rows: &mut Vec<T>,
    page_size: i64,
    id_of: impl Fn(&T) -> Uuid,
    scope: Uuid,
    filter: [u8; 8],
) -> String {
    let page_size = usize::try_from(page_size).unwrap_or(usize::MAX);
    if rows.len() <= page_size {
        return String::new();
    }
    rows.truncate(page_size);
    rows.last().map(|last| PageToken { scope, filter, after: id_of(last) }.encode()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_in_its_own_scope_only() {
        let scope = Uuid::now_v7();
        let filter = fingerprint("state=active");
        let token = PageToken { scope, filter, after: Uuid::now_v7() };
        let encoded = token.encode();
        assert_eq!(PageToken::decode(&encoded, scope, filter).ok(), Some(Some(token.after)));
        assert!(PageToken::decode(&encoded, Uuid::now_v7(), filter).is_err());
        assert!(PageToken::decode(&encoded, scope, fingerprint("")).is_err());
        assert!(PageToken::decode(&encoded[..10], scope, filter).is_err());
        assert!(PageToken::decode("%%%", scope, filter).is_err());
    }

    #[test]
    fn page_sizes_are_defaulted_clamped_and_never_negative() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(5).ok(), Some(5));
        assert_eq!(page_size(i32::MAX).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
