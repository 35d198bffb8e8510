//! The lifecycle state of a tenant, which tenant admission checks.

use serde::{Deserialize, Serialize};

/// The lifecycle state of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// A schema tenant whose schema is being created: not served yet (UNAVAILABLE,
    /// `TENANT_PROVISIONING`); a retry of its creation finishes it.
    Provisioning,
    /// Served normally.
    Active,
    /// Data plane answers FAILED_PRECONDITION.
    Suspended,
    /// Soft-deleted: data kept, identifiers reserved, data plane answers NOT_FOUND.
    Deleted,
}

impl TenantState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "provisioning" => Some(Self::Provisioning),
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}
