//! The lifecycle state of a tenant, which tenant admission checks.

use serde::{Deserialize, Serialize};

/// The lifecycle state of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
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
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}
