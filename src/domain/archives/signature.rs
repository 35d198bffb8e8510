//! Archive signatures (decision 0022): an HMAC-SHA256, keyed by one of the server's
//! [`ArchiveSigningKeys`], over the manifest line's exact bytes (its `\n` included). The
//! manifest commits to every data line (each table's row count and SHA-256, the length and
//! SHA-256 of all data lines, all checked by [`super::format::Verifier`]), so the MAC covers
//! the whole archive without a second pass over it.
//!
//! A signed archive has format version [`VERSION_SIGNED`] and its signature as line 2:
//! `{"signature":{"key_id":"<id>","algorithm":"HMAC-SHA256","mac":"<hex>"}}`. An unsigned
//! one has version [`VERSION_UNSIGNED`] and no such line. The rule: a server with keys signs
//! every export and imports only archives signed by one of its keys; a server without keys
//! exports unsigned archives and refuses signed ones (it cannot check them, and importing an
//! archive whose signature nobody checked would hide that it was never verified). Every refusal
//! is INVALID_ARGUMENT `ARCHIVE_SIGNATURE_INVALID` with a field violation `archive.signature`
//! that says which case it is.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::format::hex;
use crate::config::{ArchiveSigningKey, ArchiveSigningKeys};
use crate::error::{Error, Reason, Result};

/// The format version of an archive without a signature.
pub const VERSION_UNSIGNED: u32 = 1;
/// The format version of an archive whose line 2 is the manifest's signature.
pub const VERSION_SIGNED: u32 = 2;
/// The one MAC this tenantd writes and checks.
pub const ALGORITHM: &str = "HMAC-SHA256";
/// The field every signature refusal names.
const FIELD: &str = "archive.signature";

/// Line 2 of a signed archive.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureLine {
    signature: Signature,
}

/// A manifest's signature.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signature {
    /// The id of the key that signed.
    key_id: String,
    /// [`ALGORITHM`].
    algorithm: String,
    /// The MAC, hex.
    mac: String,
}

fn refused(description: impl Into<String>) -> Error {
    Error::invalid(Reason::ArchiveSignatureInvalid, FIELD, description)
}

fn keyed(key: &ArchiveSigningKey, manifest_line: &[u8]) -> Result<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.secret())
        .map_err(|_| Error::internal(anyhow::anyhow!("HMAC refused a key of {} bytes", key.secret().len())))?;
    mac.update(manifest_line);
    Ok(mac)
}

/// The signature line (with its `\n`) of a manifest line, by the signing key; `None`
/// without keys.
pub fn sign(keys: &ArchiveSigningKeys, manifest_line: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(key) = keys.signing() else { return Ok(None) };
    let mac = keyed(key, manifest_line)?.finalize().into_bytes();
    let line = SignatureLine {
        signature: Signature { key_id: key.id().to_owned(), algorithm: ALGORITHM.to_owned(), mac: hex(&mac) },
    };
    let mut bytes = serde_json::to_vec(&line).map_err(|error| Error::internal(error.into()))?;
    bytes.push(b'\n');
    Ok(Some(bytes))
}

/// The format version an export writes with these keys.
pub fn version(keys: &ArchiveSigningKeys) -> u32 {
    if keys.is_empty() { VERSION_UNSIGNED } else { VERSION_SIGNED }
}

/// Whether a manifest of `version` must be followed by its signature on this server: refuses
/// an unsigned archive where keys are configured and a signed one where none is.
pub fn required(keys: &ArchiveSigningKeys, version: u32) -> Result<bool> {
    match (version == VERSION_SIGNED, keys.is_empty()) {
        (true, false) => Ok(true),
        (false, true) => Ok(false),
        (false, false) => Err(refused(
            "is missing: the archive is unsigned, and this server imports only archives signed by one of its \
             keys (TENANTD_ARCHIVE_SIGNING_KEYS)",
        )),
        (true, true) => Err(refused(
            "cannot be checked: the archive is signed, and this server has no key to verify it \
             (TENANTD_ARCHIVE_SIGNING_KEYS is not set)",
        )),
    }
}

/// Checks line 2 of a signed archive (with its `\n`) against its manifest line.
pub fn verify(keys: &ArchiveSigningKeys, manifest_line: &[u8], signature_line: &[u8]) -> Result<()> {
    let text = signature_line.strip_suffix(b"\n").unwrap_or(signature_line);
    let Ok(SignatureLine { signature }) = serde_json::from_slice::<SignatureLine>(text) else {
        return Err(refused(
            r#"is missing: line 2 of a signed archive must be {"signature":{"key_id":...,"algorithm":...,"mac":...}}"#,
        ));
    };
    if signature.algorithm != ALGORITHM {
        return Err(refused(format!("uses {:?}: this tenantd checks only {ALGORITHM}", signature.algorithm)));
    }
    let Some(key) = keys.get(&signature.key_id) else {
        return Err(refused(format!(
            "names key id {:?}, which is not one of this server's signing keys",
            signature.key_id
        )));
    };
    let Some(mac) = unhex(&signature.mac) else {
        return Err(refused("has a mac that is not hex"));
    };
    keyed(key, manifest_line)?.verify_slice(&mac).map_err(|_| {
        refused(format!(
            "does not match the manifest under key {:?}: the archive was changed after it was signed",
            signature.key_id
        ))
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}
