//! The lifecycle of a tenant: its states and the one table of transitions between them.
//!
//! | from \ transition | Activate | Suspend   | Resume  | Delete  | StartPurge | FinishPurge | Restore      |
//! |-------------------|----------|-----------|---------|---------|------------|-------------|--------------|
//! | PROVISIONING      | ACTIVE   | refused¹  | refused¹| DELETED | refused²   | refused²    | refused³     |
//! | ACTIVE            | –        | SUSPENDED | –       | DELETED | refused²   | refused²    | refused³     |
//! | SUSPENDED         | refused⁴ | –         | ACTIVE  | DELETED | refused²   | refused²    | refused³     |
//! | DELETED           | refused⁵ | refused⁵  | ACTIVE  | –       | PURGING    | refused²    | refused³     |
//! | PURGING           | refused⁶ | refused⁶  | refused⁶| –       | –          | PURGED      | refused⁶     |
//! | PURGED            | refused⁷ | refused⁷  | refused⁷| –       | –          | –           | PROVISIONING |
//!
//! `–`: the tenant is already there, and the transition is a no-op (not audited). Refusals:
//! ¹ TENANT_PROVISIONING, ² TENANT_NOT_DELETED, ³ TENANT_ALREADY_EXISTS, ⁴ TENANT_SUSPENDED,
//! ⁵ TENANT_DELETED, ⁶ TENANT_PURGING, ⁷ TENANT_PURGED. The README's state table is this one.
//!
//! Resume on a DELETED tenant is the undelete: it keeps its data and identifiers until it is
//! purged. Restore is an import into a purged tenant's id.

use serde::{Deserialize, Serialize};

use crate::error::Reason;

/// The lifecycle state of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// Not everything the tenant needs exists yet (its schema on the schema tier, its
    /// imported rows): not served (UNAVAILABLE, `TENANT_PROVISIONING`); a retry of its
    /// creation or import finishes it.
    Provisioning,
    /// Served normally.
    Active,
    /// Data plane answers FAILED_PRECONDITION.
    Suspended,
    /// Soft-deleted: data kept, identifiers reserved, data plane answers NOT_FOUND;
    /// ResumeTenant restores it until it is purged.
    Deleted,
    /// Its rows are being removed; nothing can stop or undo that.
    Purging,
    /// Only a tombstone is left (id, state and times): no rows, no identifiers, no
    /// slug (released). An import can restore into its id.
    Purged,
}

/// Something that changes a tenant's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// PROVISIONING → ACTIVE: everything the tenant needs exists.
    Activate,
    /// ACTIVE → SUSPENDED.
    Suspend,
    /// SUSPENDED or DELETED → ACTIVE.
    Resume,
    /// PROVISIONING, ACTIVE or SUSPENDED → DELETED.
    Delete,
    /// DELETED → PURGING.
    StartPurge,
    /// PURGING → PURGED.
    FinishPurge,
    /// PURGED → PROVISIONING: an import into the purged tenant's id.
    Restore,
}

impl Transition {
    /// The audit action of the transition.
    pub fn action(self) -> &'static str {
        match self {
            Self::Activate => "tenant.provision",
            Self::Suspend => "tenant.suspend",
            Self::Resume => "tenant.resume",
            Self::Delete => "tenant.delete",
            Self::StartPurge => "tenant.purge_start",
            Self::FinishPurge => "tenant.purge",
            Self::Restore => "tenant.restore",
        }
    }
}

impl TenantState {
    /// Every state.
    pub const ALL: [TenantState; 6] =
        [Self::Provisioning, Self::Active, Self::Suspended, Self::Deleted, Self::Purging, Self::Purged];

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
            Self::Purging => "purging",
            Self::Purged => "purged",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == value)
    }

    /// Whether the data plane treats the tenant as gone (NOT_FOUND).
    pub fn is_gone(self) -> bool {
        matches!(self, Self::Deleted | Self::Purging | Self::Purged)
    }

    /// The state after `transition` (this state itself when the transition is a no-op), or
    /// the reason it is refused: the table in this module's documentation.
    pub fn after(self, transition: Transition) -> Result<TenantState, Reason> {
        use TenantState::*;
        use Transition::*;
        match (self, transition) {
            (Purging, FinishPurge) => Ok(Purged),
            (Purging, Delete | StartPurge) | (Purged, Delete | StartPurge | FinishPurge) => Ok(self),
            (Purging, _) => Err(Reason::TenantPurging),
            (Purged, Restore) => Ok(Provisioning),
            (Purged, _) => Err(Reason::TenantPurged),
            (_, Restore) => Err(Reason::TenantAlreadyExists),
            (Deleted, StartPurge) => Ok(Purging),
            (_, StartPurge | FinishPurge) => Err(Reason::TenantNotDeleted),
            (_, Delete) => Ok(Deleted),
            (Deleted, Resume) => Ok(Active),
            (Deleted, _) => Err(Reason::TenantDeleted),
            (Provisioning, Activate) => Ok(Active),
            (Provisioning, _) => Err(Reason::TenantProvisioning),
            (Active, Activate | Resume) => Ok(Active),
            (Suspended, Activate) => Err(Reason::TenantSuspended),
            (Active | Suspended, Suspend) => Ok(Suspended),
            (Suspended, Resume) => Ok(Active),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_forms_round_trip() {
        for state in TenantState::ALL {
            assert_eq!(TenantState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TenantState::parse("gone"), None);
    }

    #[test]
    fn the_transition_table_is_the_documented_one() {
        use Transition::*;
        let transitions = [Activate, Suspend, Resume, Delete, StartPurge, FinishPurge, Restore];
        // One row per state, one cell per transition, as in the module's table.
        let table: [(TenantState, [&str; 7]); 6] = [
            (
                TenantState::Provisioning,
                [
                    "active",
                    "TENANT_PROVISIONING",
                    "TENANT_PROVISIONING",
                    "deleted",
                    "TENANT_NOT_DELETED",
                    "TENANT_NOT_DELETED",
                    "TENANT_ALREADY_EXISTS",
                ],
            ),
            (
                TenantState::Active,
                [
                    "active",
                    "suspended",
                    "active",
                    "deleted",
                    "TENANT_NOT_DELETED",
                    "TENANT_NOT_DELETED",
                    "TENANT_ALREADY_EXISTS",
                ],
            ),
            (
                TenantState::Suspended,
                [
                    "TENANT_SUSPENDED",
                    "suspended",
                    "active",
                    "deleted",
                    "TENANT_NOT_DELETED",
                    "TENANT_NOT_DELETED",
                    "TENANT_ALREADY_EXISTS",
                ],
            ),
            (
                TenantState::Deleted,
                [
                    "TENANT_DELETED",
                    "TENANT_DELETED",
                    "active",
                    "deleted",
                    "purging",
                    "TENANT_NOT_DELETED",
                    "TENANT_ALREADY_EXISTS",
                ],
            ),
            (
                TenantState::Purging,
                [
                    "TENANT_PURGING",
                    "TENANT_PURGING",
                    "TENANT_PURGING",
                    "purging",
                    "purging",
                    "purged",
                    "TENANT_PURGING",
                ],
            ),
            (
                TenantState::Purged,
                ["TENANT_PURGED", "TENANT_PURGED", "TENANT_PURGED", "purged", "purged", "purged", "provisioning"],
            ),
        ];
        for (from, row) in table {
            for (transition, expected) in transitions.into_iter().zip(row) {
                let got = match from.after(transition) {
                    Ok(state) => state.as_str(),
                    Err(reason) => reason.as_str(),
                };
                assert_eq!(got, expected, "{from:?} after {transition:?}");
            }
        }
    }
}
