//! Positions in the event stream, and the opaque cursors that carry them to clients.
//!
//! A cursor is base64url of: a version byte, the position (transaction id, event id), the
//! time it stands for (the event's time, or when a bookmark was sent; retention is checked
//! against it) and a check of 8 bytes (SHA-256 of the rest). The check rejects a cursor that
//! was mistyped, truncated or edited. It is not a signature: as with page tokens, a forged
//! cursor can only move a watcher within the events its credential may read anyway (the
//! reads run under the tenant's RLS), so there is nothing to gain by forging one.

use std::cmp::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::Digest;
use uuid::Uuid;

use crate::error::{Error, Reason, Result};

const VERSION: u8 = 1;
const BODY_LENGTH: usize = 1 + 8 + 16 + 8;
const ENCODED_LENGTH: usize = BODY_LENGTH + 8;
const CHECK_DOMAIN: &[u8] = b"tenantd event cursor v1";

/// A point of the stream: every event at or before it has been delivered. Ordered by
/// transaction id, then event id, as PostgreSQL orders `(transaction_id, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// `pg_current_xact_id()` of the event's transaction.
    pub transaction_id: i64,
    /// The event's id; nil for "before every event of this transaction id".
    pub id: Uuid,
}

impl Position {
    /// Before every event of transactions `transaction_id` and later.
    pub fn before_transaction(transaction_id: i64) -> Self {
        Self { transaction_id, id: Uuid::nil() }
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        // Uuid orders by its bytes, as PostgreSQL's uuid type does.
        (self.transaction_id, self.id.as_bytes()).cmp(&(other.transaction_id, other.id.as_bytes()))
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A position with the time it stands for, as clients hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Where.
    pub position: Position,
    /// The time of the event at the position, or of the bookmark (milliseconds are kept).
    pub time: DateTime<Utc>,
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(ENCODED_LENGTH);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.position.transaction_id.to_be_bytes());
        bytes.extend_from_slice(self.position.id.as_bytes());
        bytes.extend_from_slice(&self.time.timestamp_millis().to_be_bytes());
        let check = check(&bytes);
        bytes.extend_from_slice(&check);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses a request's `field`; any damage is INVALID_ARGUMENT `EVENT_CURSOR_INVALID`.
    pub fn decode(field: &str, text: &str) -> Result<Self> {
        let invalid = || Error::invalid(Reason::EventCursorInvalid, field, "is not a cursor of this event stream");
        // A valid cursor has a fixed length: bound the work before decoding.
        if text.len() > 64 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        if bytes.len() != ENCODED_LENGTH || bytes[0] != VERSION {
            return Err(invalid());
        }
        let (body, given_check) = bytes.split_at(BODY_LENGTH);
        if check(body).as_slice() != given_check {
            return Err(invalid());
        }
        let number =
            |range: std::ops::Range<usize>| body[range].try_into().map(i64::from_be_bytes).map_err(|_| invalid());
        let transaction_id = number(1..9)?;
        let id = Uuid::from_slice(&body[9..25]).map_err(|_| invalid())?;
        let time = DateTime::from_timestamp_millis(number(25..33)?).ok_or_else(invalid)?;
        if transaction_id < 0 {
            return Err(invalid());
        }
        Ok(Self { position: Position { transaction_id, id }, time })
    }
}

fn check(body: &[u8]) -> [u8; 8] {
    let digest = sha2::Sha256::new().chain_update(CHECK_DOMAIN).chain_update(body).finalize();
    let mut check = [0u8; 8];
    check.copy_from_slice(&digest[..8]);
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        let time = DateTime::from_timestamp_millis(1_764_633_600_123).expect("a time");
        Cursor { position: Position { transaction_id: 4_242, id: Uuid::now_v7() }, time }
    }

    #[test]
    fn a_cursor_round_trips() {
        let cursor = cursor();
        assert_eq!(Cursor::decode("cursor", &cursor.encode()).ok(), Some(cursor));
    }

    #[test]
    fn a_damaged_cursor_is_rejected_with_a_field_violation() {
        let encoded = cursor().encode();
        // Control: the intact cursor decodes.
        assert!(Cursor::decode("cursor", &encoded).is_ok());
        let mut edited = encoded.clone().into_bytes();
        edited[5] = if edited[5] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).expect("ascii");
        for bad in [edited.as_str(), &encoded[..20], "", "%%%", &"A".repeat(200)] {
            let error = Cursor::decode("cursor", bad).expect_err(bad);
            assert_eq!(error.reason(), Reason::EventCursorInvalid);
            assert_eq!(error.violations()[0].field, "cursor");
        }
    }

    #[test]
    fn positions_order_by_transaction_then_id() {
        let early = Uuid::from_u128(1);
        let late = Uuid::from_u128(2);
        assert!(Position { transaction_id: 1, id: late } < Position { transaction_id: 2, id: early });
        assert!(Position { transaction_id: 2, id: early } < Position { transaction_id: 2, id: late });
        assert!(Position::before_transaction(2) < Position { transaction_id: 2, id: early });
    }
}
