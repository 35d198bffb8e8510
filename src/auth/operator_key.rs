//! The operator key format, parsed without any I/O: the platform's credentials for people
//! and automation, in the same discipline as tenant API keys ([`super::api_key`]).
//!
//! A key reads `tdo_` + operator id + secret + checksum, each part fixed-width base62 (22,
//! 22 and 6 characters; 54 in all). The distinct prefix tells people, secret scanners and
//! the gateway which kind of credential it is; the operator id is public (listed and
//! audited); the secret is 128 bits from the CSPRNG and only its SHA-256 is stored.

use uuid::Uuid;

pub use super::encoding::FormatError;
use super::encoding::{self, CHECKSUM, PART};

/// Every operator key starts with this.
pub const PREFIX: &str = "tdo_";
/// Length of every operator key.
pub const LENGTH: usize = PREFIX.len() + 2 * PART + CHECKSUM;

/// A parsed operator key.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorKeyToken {
    operator_id: Uuid,
    secret: u128,
}

impl std::fmt::Debug for OperatorKeyToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OperatorKeyToken")
            .field("operator_id", &self.operator_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl OperatorKeyToken {
    /// A new key for operator `operator_id` with a fresh random secret.
    pub fn generate(operator_id: Uuid) -> anyhow::Result<Self> {
        Ok(Self { operator_id, secret: encoding::random_secret()? })
    }

    /// The operator the key belongs to.
    pub fn operator_id(&self) -> Uuid {
        self.operator_id
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
        encoding::encode(PREFIX, &[self.operator_id.as_u128(), self.secret])
    }

    /// Parses and checks a key. No I/O.
    pub fn parse(key: &str) -> Result<Self, FormatError> {
        let [operator, secret] = encoding::decode::<2>(PREFIX, key)?;
        Ok(Self { operator_id: Uuid::from_u128(operator), secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> OperatorKeyToken {
        OperatorKeyToken::generate(Uuid::now_v7()).expect("randomness")
    }

    #[test]
    fn an_operator_key_round_trips_through_its_text_form() {
        let key = key();
        let text = key.encode();
        assert_eq!(text.len(), LENGTH);
        assert!(text.starts_with(PREFIX));
        assert_eq!(OperatorKeyToken::parse(&text), Ok(key.clone()));
        assert!(key.matches(&key.secret_sha256()));
        assert!(!key.matches(&OperatorKeyToken::generate(key.operator_id()).expect("randomness").secret_sha256()));
    }

    #[test]
    fn a_mistyped_truncated_or_foreign_operator_key_is_refused() {
        let text = key().encode();
        let mut bytes = text.clone().into_bytes();
        bytes[PREFIX.len() + 30] = if bytes[PREFIX.len() + 30] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert_eq!(OperatorKeyToken::parse(&tampered), Err(FormatError::Checksum));
        assert_eq!(OperatorKeyToken::parse(&text[..LENGTH - 1]), Err(FormatError::Malformed));
        assert_eq!(OperatorKeyToken::parse(&text.replacen(PREFIX, "tdk_", 1)), Err(FormatError::Malformed));
        let multibyte = format!("{PREFIX}{}\u{1e5}{}", "0".repeat(20), "0".repeat(28));
        assert_eq!(multibyte.len(), LENGTH);
        assert_eq!(OperatorKeyToken::parse(&multibyte), Err(FormatError::Malformed));
    }

    #[test]
    fn the_operator_secret_is_never_in_debug_output() {
        let key = key();
        assert!(!format!("{key:?}").contains(&key.secret.to_string()));
        assert!(!format!("{key:?}").contains(&key.encode()[PREFIX.len() + PART..]));
    }
}
