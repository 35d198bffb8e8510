//! Parsing of the tenant metadata, done before any I/O.

use std::fmt;

use http::HeaderMap;
use uuid::Uuid;

use crate::error::{Error, Reason, Result};

/// A tenant slug: `^[a-z][a-z0-9-]{2,62}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slug(String);

impl Slug {
    /// Validates a slug, returning a description of the problem if it is not one.
    pub fn parse(value: &str) -> std::result::Result<Self, &'static str> {
        let bytes = value.as_bytes();
        let well_formed = (3..=63).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes.iter().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-');
        if well_formed { Ok(Self(value.to_owned())) } else { Err("must match ^[a-z][a-z0-9-]{2,62}$") }
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Metadata key naming the tenant by id.
pub const TENANT_ID_HEADER: &str = "x-tenant-id";
/// Metadata key naming the tenant by slug.
pub const TENANT_SLUG_HEADER: &str = "x-tenant-slug";

/// How a request names its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSelector {
    /// By id (`x-tenant-id`).
    Id(Uuid),
    /// By slug (`x-tenant-slug`).
    Slug(Slug),
}

/// Reads exactly one of `x-tenant-id` or `x-tenant-slug`. Missing → TENANT_REQUIRED;
/// both, or either given twice → TENANT_SELECTOR_AMBIGUOUS; not ASCII or not a UUID →
/// TENANT_ID_MALFORMED / TENANT_SLUG_MALFORMED. All INVALID_ARGUMENT.
pub fn parse(headers: &HeaderMap) -> Result<TenantSelector> {
    let id = single_value(headers, TENANT_ID_HEADER)?;
    let slug = single_value(headers, TENANT_SLUG_HEADER)?;
    match (id, slug) {
        (Some(_), Some(_)) => Err(Error::invalid(
            Reason::TenantSelectorAmbiguous,
            TENANT_ID_HEADER,
            "send exactly one of x-tenant-id or x-tenant-slug",
        )),
        (None, None) => Err(Error::invalid(
            Reason::TenantRequired,
            TENANT_ID_HEADER,
            "the data plane needs x-tenant-id or x-tenant-slug metadata",
        )),
        (Some(id), None) => parse_id(id).map(TenantSelector::Id),
        (None, Some(slug)) => Slug::parse(slug)
            .map(TenantSelector::Slug)
            .map_err(|description| Error::invalid(Reason::TenantSlugMalformed, TENANT_SLUG_HEADER, description)),
    }
}

/// Like [`parse`], but no tenant metadata at all is `None` (API-key callers need none).
pub fn parse_optional(headers: &HeaderMap) -> Result<Option<TenantSelector>> {
    if !headers.contains_key(TENANT_ID_HEADER) && !headers.contains_key(TENANT_SLUG_HEADER) {
        return Ok(None);
    }
    parse(headers).map(Some)
}

fn parse_id(value: &str) -> Result<Uuid> {
    // Only the canonical hyphenated form: a selector must have exactly one spelling.
    if value.len() != 36 {
        return Err(malformed_id());
    }
    Uuid::try_parse(value).map_err(|_| malformed_id())
}

fn malformed_id() -> Error {
    Error::invalid(Reason::TenantIdMalformed, TENANT_ID_HEADER, "must be a UUID in its canonical hyphenated form")
}

fn single_value<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::invalid(Reason::TenantSelectorAmbiguous, name, "given more than once"));
    }
    let reason = if name == TENANT_ID_HEADER { Reason::TenantIdMalformed } else { Reason::TenantSlugMalformed };
    first.to_str().map(Some).map_err(|_| Error::invalid(reason, name, "must be visible ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("valid header value"));
        }
        map
    }

    #[test]
    fn an_id_in_canonical_form_is_accepted() {
        let id = "0193a8f2-7c1e-7d3a-9b1e-5f2a3c4d5e6f";
        assert_eq!(
            parse(&headers(&[(TENANT_ID_HEADER, id)])).ok(),
            Some(TenantSelector::Id(id.parse().expect("uuid")))
        );
    }

    #[test]
    fn a_non_canonical_uuid_is_malformed() {
        let error = parse(&headers(&[(TENANT_ID_HEADER, "0193a8f27c1e7d3a9b1e5f2a3c4d5e6f")])).err();
        assert_eq!(error.map(|e| e.reason()), Some(Reason::TenantIdMalformed));
    }

    #[test]
    fn a_repeated_header_is_ambiguous() {
        let id = "0193a8f2-7c1e-7d3a-9b1e-5f2a3c4d5e6f";
        let error = parse(&headers(&[(TENANT_ID_HEADER, id), (TENANT_ID_HEADER, id)])).err();
        assert_eq!(error.map(|e| e.reason()), Some(Reason::TenantSelectorAmbiguous));
    }

    #[test]
    fn no_header_requires_a_tenant() {
        assert_eq!(parse(&HeaderMap::new()).err().map(|e| e.reason()), Some(Reason::TenantRequired));
    }
}
