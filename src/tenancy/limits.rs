//! The request-rate limits admission enforces for a tenant: the effective values of its plan
//! and its overrides, carried in the cached [`super::resolver::TenantRecord`] so that checking
//! them costs no query.

use serde::{Deserialize, Serialize};

/// A sustained rate with a burst allowance (a GCRA / token bucket's two parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests admitted per second, sustained; at least 1.
    pub per_second: u32,
    /// Requests admitted at once after a quiet period; at least 1.
    pub burst: u32,
}

/// The rate limits of a tenant; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    /// All of the tenant's data-plane requests together.
    pub tenant: Option<RateLimit>,
    /// Each of the tenant's API keys alone.
    pub api_key: Option<RateLimit>,
}

/// A counted resource whose number (or size) a plan may cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quota {
    /// The tenant's users.
    Users,
    /// The tenant's documents.
    Documents,
    /// The bytes of content of all the tenant's documents.
    DocumentBytes,
    /// The tenant's API keys that are not revoked.
    ApiKeys,
}

impl Quota {
    /// Every quota, in a stable order.
    pub const ALL: [Quota; 4] = [Quota::Users, Quota::Documents, Quota::DocumentBytes, Quota::ApiKeys];

    /// The stored form, and the name `google.rpc.QuotaFailure` and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Documents => "documents",
            Self::DocumentBytes => "document_bytes",
            Self::ApiKeys => "api_keys",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|quota| quota.as_str() == value)
    }
}

/// The caps on a tenant's counted resources; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Most users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<i64>,
    /// Most documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<i64>,
    /// Most bytes of document content, all documents together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_bytes: Option<i64>,
    /// Most API keys that are not revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<i64>,
}

impl Quotas {
    /// The cap of one quota; `None` is unlimited.
    pub fn cap(&self, quota: Quota) -> Option<i64> {
        match quota {
            Quota::Users => self.users,
            Quota::Documents => self.documents,
            Quota::DocumentBytes => self.document_bytes,
            Quota::ApiKeys => self.api_keys,
        }
    }
}

/// Limits as a plan stores them, and as a tenant's overrides of its plan's limits: each
/// one optional. In a plan an absent limit is unlimited; in overrides an absent limit is
/// the plan's. Stored as a JSON object (`plans.limits`, `tenants.limit_overrides`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Rate of all of the tenant's data-plane requests together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_rate: Option<RateLimit>,
    /// Rate of each of the tenant's API keys alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_rate: Option<RateLimit>,
    /// Caps on counted resources.
    #[serde(default, flatten)]
    pub quotas: Quotas,
}

impl Limits {
    /// These limits with `overrides` in place of each limit they set.
    pub fn overridden_by(self, overrides: &Limits) -> Limits {
        let cap = |quota| overrides.quotas.cap(quota).or(self.quotas.cap(quota));
        Limits {
            tenant_rate: overrides.tenant_rate.or(self.tenant_rate),
            api_key_rate: overrides.api_key_rate.or(self.api_key_rate),
            quotas: Quotas {
                users: cap(Quota::Users),
                documents: cap(Quota::Documents),
                document_bytes: cap(Quota::DocumentBytes),
                api_keys: cap(Quota::ApiKeys),
            },
        }
    }

    /// The rate limits admission enforces.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits { tenant: self.tenant_rate, api_key: self.api_key_rate }
    }

    /// Reads a stored JSON object; `None` if it is not one tenantd wrote.
    pub fn from_json(value: &serde_json::Value) -> Option<Limits> {
        serde_json::from_value(value.clone()).ok()
    }

    /// The stored JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set_and_json_round_trips() {
        let rate = RateLimit { per_second: 10, burst: 20 };
        let plan = Limits {
            tenant_rate: Some(rate),
            quotas: Quotas { users: Some(5), ..Quotas::default() },
            ..Limits::default()
        };
        let overrides =
            Limits { quotas: Quotas { users: Some(7), api_keys: Some(2), ..Quotas::default() }, ..Limits::default() };
        let effective = plan.overridden_by(&overrides);
        assert_eq!(effective.tenant_rate, Some(rate));
        assert_eq!(effective.quotas.users, Some(7));
        assert_eq!(effective.quotas.api_keys, Some(2));
        assert_eq!(effective.quotas.documents, None);
        let json = effective.to_json();
        assert_eq!(json["users"], 7);
        assert_eq!(Limits::from_json(&json), Some(effective));
        assert_eq!(Limits::from_json(&serde_json::json!({})), Some(Limits::default()));
    }
}
