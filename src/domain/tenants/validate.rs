//! Validation of a tenant's identifiers as requests give them: domains and channel
//! bindings, each checked, normalised, deduplicated and sorted. Re-exported from
//! [`crate::domain::tenants`].

use super::ChannelBinding;
use crate::error::{Error, Reason, Result, Violations};

/// Most domains, and most channel bindings, per tenant.
pub const MAX_IDENTIFIERS: usize = 32;

/// Validates and normalises domains: lowercase DNS names with at least two labels, each
/// label 1 to 63 of `[a-z0-9-]` not starting or ending with `-`; deduplicated and sorted.
pub fn parse_domains(field: &str, domains: Vec<String>) -> Result<Vec<String>> {
    if domains.len() > MAX_IDENTIFIERS {
        return Err(Error::invalid(Reason::DomainsInvalid, field, format!("at most {MAX_IDENTIFIERS} domains")));
    }
    let mut checks = Violations::new();
    let normalised: Vec<Option<String>> = domains
        .iter()
        .enumerate()
        .map(|(index, domain)| checks.check(parse_domain(&format!("{field}[{index}]"), domain)))
        .collect();
    let mut normalised = checks.finish(|| normalised.into_iter().collect::<Option<Vec<String>>>())?;
    normalised.sort();
    normalised.dedup();
    Ok(normalised)
}

/// Validates and lowercases one domain: a DNS name of at most 253 characters with at
/// least two labels of 1 to 63 letters, digits or inner hyphens.
pub fn parse_domain(field: &str, domain: &str) -> Result<String> {
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let valid = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        });
    if valid {
        Ok(domain)
    } else {
        Err(Error::invalid(Reason::DomainsInvalid, field, "must be a DNS name like acme.example.com"))
    }
}

/// Validates channel bindings: `channel_type` matches `^[a-z][a-z0-9_-]{0,31}$`,
/// `external_id` is 1 to 255 visible characters; deduplicated and sorted.
pub fn parse_channel_bindings(field: &str, bindings: Vec<ChannelBinding>) -> Result<Vec<ChannelBinding>> {
    if bindings.len() > MAX_IDENTIFIERS {
        return Err(Error::invalid(
            Reason::ChannelBindingsInvalid,
            field,
            format!("at most {MAX_IDENTIFIERS} bindings"),
        ));
    }
    for (index, binding) in bindings.iter().enumerate() {
        parse_channel_binding(&format!("{field}[{index}]"), binding)?;
    }
    let mut bindings = bindings;
    bindings.sort();
    bindings.dedup();
    Ok(bindings)
}

/// Validates one channel binding.
pub fn parse_channel_binding(field: &str, binding: &ChannelBinding) -> Result<()> {
    let kind = binding.channel_type.as_bytes();
    let kind_ok = (1..=32).contains(&kind.len())
        && kind[0].is_ascii_lowercase()
        && kind.iter().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'-'));
    if !kind_ok {
        return Err(Error::invalid(
            Reason::ChannelBindingsInvalid,
            format!("{field}.channel_type"),
            "must match ^[a-z][a-z0-9_-]{0,31}$",
        ));
    }
    let id_ok = (1..=255).contains(&binding.external_id.chars().count())
        && binding.external_id.chars().all(|character| !character.is_control() && !character.is_whitespace());
    if !id_ok {
        return Err(Error::invalid(
            Reason::ChannelBindingsInvalid,
            format!("{field}.external_id"),
            "must be 1 to 255 characters without spaces or control characters",
        ));
    }
    Ok(())
}
