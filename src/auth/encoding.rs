//! The text form shared by tenantd's credentials (tenant API keys and operator keys): a
//! prefix, fixed-width base62 parts of 128 bits each (22 characters; the last is the
//! secret), and a checksum (the first 32 bits of SHA-256 over everything before it, 6
//! characters) that rejects a typo or a made-up key before any lookup. No I/O.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters of one 128-bit part.
pub(super) const PART: usize = 22;
/// Characters of the checksum.
pub(super) const CHECKSUM: usize = 6;

/// Why a string is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// Wrong prefix, length or alphabet.
    Malformed,
    /// Well-formed but the checksum does not match.
    Checksum,
}

/// 128 bits from the operating system's CSPRNG, for a secret.
pub(super) fn random_secret() -> anyhow::Result<u128> {
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).map_err(|error| anyhow::anyhow!("no randomness for a key: {error}"))?;
    Ok(u128::from_be_bytes(secret))
}

/// SHA-256 of a secret: the only thing stored.
pub(super) fn secret_sha256(secret: u128) -> [u8; 32] {
    Sha256::digest(secret.to_be_bytes()).into()
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub(super) fn secret_matches(secret: u128, stored: &[u8]) -> bool {
    bool::from(secret_sha256(secret).as_slice().ct_eq(stored))
}

/// `prefix`, then every part, then the checksum.
pub(super) fn encode(prefix: &str, parts: &[u128]) -> String {
    let mut key = String::with_capacity(prefix.len() + parts.len() * PART + CHECKSUM);
    key.push_str(prefix);
    for part in parts {
        push_base62(&mut key, *part, PART);
    }
    let checksum = checksum(&key);
    push_base62(&mut key, u128::from(checksum), CHECKSUM);
    key
}

/// The `N` parts of a key that starts with `prefix`, its checksum checked.
pub(super) fn decode<const N: usize>(prefix: &str, key: &str) -> Result<[u128; N], FormatError> {
    let length = prefix.len() + N * PART + CHECKSUM;
    // ASCII only, so that the fixed-width slices below fall on character boundaries.
    if key.len() != length || !key.is_ascii() || !key.starts_with(prefix) {
        return Err(FormatError::Malformed);
    }
    let body = &key[prefix.len()..];
    let mut parts = [0u128; N];
    for (index, part) in parts.iter_mut().enumerate() {
        *part = decode_base62(&body[index * PART..(index + 1) * PART]).ok_or(FormatError::Malformed)?;
    }
    let stated = decode_base62(&body[N * PART..]).ok_or(FormatError::Malformed)?;
    if stated != u128::from(checksum(&key[..length - CHECKSUM])) {
        return Err(FormatError::Checksum);
    }
    Ok(parts)
}

fn checksum(text: &str) -> u32 {
    let digest = Sha256::digest(text.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn push_base62(out: &mut String, mut value: u128, width: usize) {
    let mut digits = vec![b'0'; width];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out.extend(digits.into_iter().map(char::from));
}

fn decode_base62(text: &str) -> Option<u128> {
    text.bytes().try_fold(0u128, |value, byte| {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'A'..=b'Z' => byte - b'A' + 10,
            b'a'..=b'z' => byte - b'a' + 36,
            _ => return None,
        };
        value.checked_mul(62)?.checked_add(u128::from(digit))
    })
}
