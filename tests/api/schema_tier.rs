//! The data-plane suites again, with every tenant the helpers create in the schema tier:
//! the same files as `users`, `documents` and `settings`, compiled a second time against a
//! `helpers` whose apps create SCHEMA tenants. Each suite names its helpers as
//! `super::helpers`, so this module swaps them without a copy of any test.

mod helpers {
    pub use crate::helpers::*;

    /// [`crate::helpers::spawn_app`], creating schema tenants.
    pub async fn spawn_app() -> TestApp {
        spawn_app_in(IsolationTier::Schema, |_| {}).await
    }

    /// [`crate::helpers::spawn_app_with`], creating schema tenants.
    #[allow(dead_code)]
    pub async fn spawn_app_with(configure: impl FnOnce(&mut tenantd::config::Config)) -> TestApp {
        spawn_app_in(IsolationTier::Schema, configure).await
    }
}

// Deliberately the same file as `crate::documents`, compiled against this module's helpers.
#[allow(clippy::duplicate_mod)]
#[path = "documents.rs"]
mod documents;
// Deliberately the same file as `crate::settings`, compiled against this module's helpers.
#[allow(clippy::duplicate_mod)]
#[path = "settings.rs"]
mod settings;
// Deliberately the same file as `crate::users`, compiled against this module's helpers.
#[allow(clippy::duplicate_mod)]
#[path = "users.rs"]
mod users;
