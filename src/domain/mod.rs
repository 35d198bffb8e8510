//! Validated domain types and the operations on tenants and users. Nothing here knows
//! about protobuf; the adapters in [`crate::api`] convert at the edge.

use std::collections::BTreeMap;

use crate::error::{Error, Reason, Result, Violations};

pub mod api_keys;
pub mod archives;
pub mod audit;
pub mod documents;
pub mod events;
pub mod idempotency;
pub mod key_uses;
pub mod moves;
pub mod operations;
pub mod operators;
pub mod page;
pub mod plans;
pub mod purge;
pub mod quotas;
pub mod rate_warnings;
pub mod resource;
pub mod settings;
pub mod tenants;
pub mod usage;
pub mod users;

pub use crate::tenancy::selector::Slug;

/// Parses a resource id field: a UUID in canonical hyphenated form.
pub fn parse_id(field: &str, value: &str) -> Result<uuid::Uuid> {
    if value.is_empty() {
        return Err(Error::invalid(Reason::FieldRequired, field, "is required"));
    }
    if value.len() != 36 {
        return Err(Error::invalid(Reason::IdMalformed, field, "must be a UUID in its canonical hyphenated form"));
    }
    uuid::Uuid::try_parse(value)
        .map_err(|_| Error::invalid(Reason::IdMalformed, field, "must be a UUID in its canonical hyphenated form"))
}

/// Checks a name for people: 1 to 200 characters with no control characters (or 0 to
/// 200 if `required` is false).
pub fn parse_display_name(field: &str, value: &str, required: bool) -> Result<String> {
    if required && value.is_empty() {
        return Err(Error::invalid(Reason::FieldRequired, field, "is required"));
    }
    parse_text(field, value, 200)
}

/// Checks text for people: at most `max` characters, no control characters.
pub fn parse_text(field: &str, value: &str, max: usize) -> Result<String> {
    if value.chars().count() > max {
        return Err(Error::invalid(Reason::FieldTooLong, field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(Reason::FieldMalformed, field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// Checks tenant labels: at most 64; keys `^[a-z][a-z0-9_.-]{0,62}$`; values at most 255
/// characters without control characters.
pub fn parse_labels(
    field: &str,
    labels: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>> {
    let labels: BTreeMap<String, String> = labels.into_iter().collect();
    if labels.len() > 64 {
        return Err(Error::invalid(Reason::LabelsInvalid, field, "at most 64 labels"));
    }
    for (key, value) in &labels {
        let bytes = key.as_bytes();
        let key_ok = (1..=63).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'.' | b'-'));
        if !key_ok {
            return Err(Error::invalid(
                Reason::LabelsInvalid,
                format!("{field}[{key:?}]"),
                "key must match ^[a-z][a-z0-9_.-]{0,62}$",
            ));
        }
        if value.chars().count() > 255 || value.chars().any(char::is_control) {
            return Err(Error::invalid(
                Reason::LabelsInvalid,
                format!("{field}[{key}]"),
                "value must be at most 255 characters without control characters",
            ));
        }
    }
    Ok(labels)
}

/// The etag of a stored revision. Etags are opaque to clients.
pub fn etag(revision: i64) -> String {
    format!("\"{revision}\"")
}

/// Parses an etag sent by a client into the revision it names; empty means
/// "unconditional". An etag that could never match is ABORTED like a stale one.
pub fn parse_etag(value: &str) -> Result<Option<i64>> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|digits| digits.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(Error::etag_mismatch)
}

/// Checks a request's etag against the stored revision.
pub fn check_etag(expected: Option<i64>, stored: i64) -> Result<()> {
    match expected {
        Some(revision) if revision != stored => Err(Error::etag_mismatch()),
        _ => Ok(()),
    }
}

/// A field mask: the set of paths an update touches.
#[derive(Debug, Clone, Default)]
pub struct UpdateMask {
    paths: Vec<String>,
}

impl UpdateMask {
    /// Validates `paths` against the updatable ones. An empty mask is rejected: AIP-134
    /// allows it to mean "every field", but that silently clears fields a client did not
    /// know about.
    pub fn parse(paths: Vec<String>, updatable: &[&str]) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::invalid(
                Reason::UpdateMaskRequired,
                "update_mask",
                format!("name the fields to update; updatable: {}", updatable.join(", ")),
            ));
        }
        if let Some(unknown) = paths.iter().find(|path| !updatable.contains(&path.as_str())) {
            return Err(Error::invalid(
                Reason::UpdateMaskInvalid,
                "update_mask",
                format!("`{unknown}` cannot be updated; updatable: {}", updatable.join(", ")),
            ));
        }
        Ok(Self { paths })
    }

    /// The mask of every updatable field: what a create sets.
    pub fn all(updatable: &[&str]) -> Self {
        Self { paths: updatable.iter().map(|path| (*path).to_owned()).collect() }
    }

    /// Whether the mask names `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.paths.iter().any(|candidate| candidate == path)
    }

    /// The value `parse` gives if the mask names `path` (an invalid one is recorded in
    /// `checks`), else `None`: a patch field.
    pub fn check<T>(&self, path: &str, checks: &mut Violations, parse: impl FnOnce() -> Result<T>) -> Option<T> {
        if self.contains(path) { checks.check(parse()) } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_documented_pattern() {
        assert!(Slug::parse("acme").is_ok());
        assert!(Slug::parse("a-1-b").is_ok());
        assert!(Slug::parse("ab").is_err());
        assert!(Slug::parse("1abc").is_err());
        assert!(Slug::parse("Acme").is_err());
        assert!(Slug::parse(&"a".repeat(64)).is_err());
        assert!(Slug::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn an_etag_round_trips_and_a_garbled_one_never_matches() {
        assert_eq!(parse_etag(&etag(7)).ok(), Some(Some(7)));
        assert_eq!(parse_etag("").ok(), Some(None));
        assert_eq!(parse_etag("7").err().map(|error| error.reason()), Some(Reason::EtagMismatch));
    }
}
