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

/// A limit by the name its `PlanLimits` field has, as overrides lift it to unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitName {
    /// The tenant's request rate.
    TenantRate,
    /// Each API key's request rate.
    ApiKeyRate,
    /// The cap on users.
    MaxUsers,
    /// The cap on documents.
    MaxDocuments,
    /// The cap on document bytes.
    MaxDocumentBytes,
    /// The cap on API keys.
    MaxApiKeys,
}

impl LimitName {
    /// Every limit, in the order of `PlanLimits`' fields.
    pub const ALL: [LimitName; 6] = [
        LimitName::TenantRate,
        LimitName::ApiKeyRate,
        LimitName::MaxUsers,
        LimitName::MaxDocuments,
        LimitName::MaxDocumentBytes,
        LimitName::MaxApiKeys,
    ];

    /// The field's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantRate => "tenant_rate",
            Self::ApiKeyRate => "api_key_rate",
            Self::MaxUsers => "max_users",
            Self::MaxDocuments => "max_documents",
            Self::MaxDocumentBytes => "max_document_bytes",
            Self::MaxApiKeys => "max_api_keys",
        }
    }

    /// Parses a field's name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|name| name.as_str() == value)
    }

    /// The limit that caps `quota`.
    pub fn of_quota(quota: Quota) -> Self {
        match quota {
            Quota::Users => Self::MaxUsers,
            Quota::Documents => Self::MaxDocuments,
            Quota::DocumentBytes => Self::MaxDocumentBytes,
            Quota::ApiKeys => Self::MaxApiKeys,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of limits, stored as the list of their names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<LimitName>", into = "Vec<LimitName>")]
pub struct LimitSet(u8);

impl LimitSet {
    /// Whether `name` is in the set.
    pub fn contains(self, name: LimitName) -> bool {
        self.0 & name.bit() != 0
    }

    /// The set with `name` in it.
    pub fn with(self, name: LimitName) -> Self {
        Self(self.0 | name.bit())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The names in the set, in [`LimitName::ALL`] order.
    pub fn names(self) -> impl Iterator<Item = LimitName> {
        LimitName::ALL.into_iter().filter(move |name| self.contains(*name))
    }
}

impl From<Vec<LimitName>> for LimitSet {
    fn from(names: Vec<LimitName>) -> Self {
        names.into_iter().fold(Self::default(), Self::with)
    }
}

impl From<LimitSet> for Vec<LimitName> {
    fn from(set: LimitSet) -> Self {
        set.names().collect()
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
    /// In overrides: the limits lifted to unlimited whatever the plan sets (none of them set
    /// here). Empty in a plan.
    #[serde(default, skip_serializing_if = "LimitSet::is_empty")]
    pub unlimited: LimitSet,
}

impl Limits {
    /// These limits with `overrides` in place of each limit they set, and none for each
    /// they lift to unlimited.
    pub fn overridden_by(self, overrides: &Limits) -> Limits {
        let lifted = |name| overrides.unlimited.contains(name);
        let cap = |quota| {
            if lifted(LimitName::of_quota(quota)) {
                None
            } else {
                overrides.quotas.cap(quota).or(self.quotas.cap(quota))
            }
        };
        let rate = |name, overridden: Option<RateLimit>, planned: Option<RateLimit>| {
            if lifted(name) { None } else { overridden.or(planned) }
        };
        Limits {
            tenant_rate: rate(LimitName::TenantRate, overrides.tenant_rate, self.tenant_rate),
            api_key_rate: rate(LimitName::ApiKeyRate, overrides.api_key_rate, self.api_key_rate),
            quotas: Quotas {
                users: cap(Quota::Users),
                documents: cap(Quota::Documents),
                document_bytes: cap(Quota::DocumentBytes),
                api_keys: cap(Quota::ApiKeys),
            },
            unlimited: LimitSet::default(),
        }
    }

    /// Whether a limit is set (to a value, not lifted).
    pub fn is_set(&self, name: LimitName) -> bool {
        match name {
            LimitName::TenantRate => self.tenant_rate.is_some(),
            LimitName::ApiKeyRate => self.api_key_rate.is_some(),
            LimitName::MaxUsers => self.quotas.users.is_some(),
            LimitName::MaxDocuments => self.quotas.documents.is_some(),
            LimitName::MaxDocumentBytes => self.quotas.document_bytes.is_some(),
            LimitName::MaxApiKeys => self.quotas.api_keys.is_some(),
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

    #[test]
    fn an_override_lifts_a_plans_limit_to_unlimited_and_the_set_round_trips_as_names() {
        let rate = RateLimit { per_second: 10, burst: 20 };
        let plan = Limits {
            tenant_rate: Some(rate),
            quotas: Quotas { users: Some(5), documents: Some(3), ..Quotas::default() },
            ..Limits::default()
        };
        let overrides = Limits {
            unlimited: LimitSet::default().with(LimitName::MaxUsers).with(LimitName::TenantRate),
            ..Limits::default()
        };
        let effective = plan.overridden_by(&overrides);
        assert_eq!(effective.quotas.users, None, "lifted");
        assert_eq!(effective.tenant_rate, None, "lifted");
        assert_eq!(effective.quotas.documents, Some(3), "the positive control: not lifted, the plan's");
        let json = overrides.to_json();
        assert_eq!(json["unlimited"], serde_json::json!(["tenant_rate", "max_users"]));
        assert_eq!(Limits::from_json(&json), Some(overrides));
        assert!(plan.to_json().get("unlimited").is_none(), "an empty set is not stored");
    }
}
