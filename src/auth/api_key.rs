//! The tenant API key format, parsed without any I/O.
//!
//! A key reads `tdk_` + tenant id + key id + secret + checksum, each part fixed-width
//! base62 (22, 22, 22 and 6 characters; 76 in all). Like GitHub's `ghp_` tokens:
//! - the prefix makes keys recognisable to people and to secret scanners;
//! - the key id is public (it is listed and audited); the tenant id lets the lookup run
//!   inside that tenant's RLS-scoped transaction;
//! - the secret is 128 bits from the operating system's CSPRNG; only its SHA-256 is stored;
//! - the checksum (the first 32 bits of SHA-256 over everything before it) rejects a typo or
//!   a made-up key before any database or Redis lookup.

use uuid::Uuid;

pub use super::encoding::FormatError;
use super::encoding::{self, CHECKSUM, PART};

/// Every key starts with this.
pub const PREFIX: &str = "tdk_";
/// Length of every key.
pub const LENGTH: usize = PREFIX.len() + 3 * PART + CHECKSUM;

/// A parsed API key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyToken {
    tenant_id: Uuid,
    key_id: Uuid,
    secret: u128,
}

impl std::fmt::Debug for ApiKeyToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiKeyToken")
            .field("tenant_id", &self.tenant_id)
            .field("key_id", &self.key_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl ApiKeyToken {
    /// A new key for `tenant_id` with id `key_id` and a fresh random secret.
    pub fn generate(tenant_id: Uuid, key_id: Uuid) -> anyhow::Result<Self> {
        Ok(Self { tenant_id, key_id, secret: encoding::random_secret()? })
    }

    /// The tenant the key belongs to.
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// The key's public id.
    pub fn key_id(&self) -> Uuid {
        self.key_id
    }

    /// SHA-256 of the secret: the only thing stored.
    pub fn secret_sha256(&self) -> [u8; 32] {
        encoding::secret_sha256(self.secret)
    }

    /// Whether the secret hashes to `stored`, compared in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        encoding::secret_matches(self.secret, stored)
    }

    /// The key as given to its holder.
    pub fn encode(&self) -> String {
        encoding::encode(PREFIX, &[self.tenant_id.as_u128(), self.key_id.as_u128(), self.secret])
    }

    /// Parses and checks a key. No I/O.
    pub fn parse(key: &str) -> Result<Self, FormatError> {
        let [tenant, id, secret] = encoding::decode::<3>(PREFIX, key)?;
        Ok(Self { tenant_id: Uuid::from_u128(tenant), key_id: Uuid::from_u128(id), secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKeyToken {
        ApiKeyToken::generate(Uuid::now_v7(), Uuid::now_v7()).expect("randomness")
    }

    #[test]
    fn a_key_round_trips_through_its_text_form() {
        let key = key();
        let text = key.encode();
        assert_eq!(text.len(), LENGTH);
        assert!(text.starts_with(PREFIX));
        assert_eq!(ApiKeyToken::parse(&text), Ok(key.clone()));
        assert!(key.matches(&key.secret_sha256()));
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let text = key().encode();
        let mut bytes = text.into_bytes();
        let position = PREFIX.len() + 50;
        bytes[position] = if bytes[position] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert_eq!(ApiKeyToken::parse(&tampered), Err(FormatError::Checksum));
    }

    #[test]
    fn wrong_prefix_length_or_alphabet_is_malformed() {
        let text = key().encode();
        assert_eq!(ApiKeyToken::parse(&text.replacen("tdk_", "tdx_", 1)), Err(FormatError::Malformed));
        assert_eq!(ApiKeyToken::parse(&text[..LENGTH - 1]), Err(FormatError::Malformed));
        assert_eq!(ApiKeyToken::parse(&format!("{}!", &text[..LENGTH - 1])), Err(FormatError::Malformed));
        // 22 base62 digits can exceed u128: overflow is malformed, not a panic.
        let overflow = format!("{PREFIX}{}{}", "z".repeat(3 * PART), "000000");
        assert_eq!(ApiKeyToken::parse(&overflow), Err(FormatError::Malformed));
    }

    #[test]
    fn a_key_with_multibyte_characters_is_malformed_not_a_panic() {
        // Found by the api_key fuzz target: slicing at fixed byte offsets split a character.
        let key = format!("{PREFIX}{}\u{1e5}{}", "0".repeat(39), "0".repeat(31));
        assert_eq!(key.len(), LENGTH);
        assert_eq!(ApiKeyToken::parse(&key), Err(FormatError::Malformed));
    }

    #[test]
    fn the_secret_is_never_in_debug_output() {
        let key = key();
        assert!(!format!("{key:?}").contains(&key.secret.to_string()));
    }
}
