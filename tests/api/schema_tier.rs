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

#[path = "documents.rs"]
mod documents;
#[path = "settings.rs"]
mod settings;
#[path = "users.rs"]
mod users;
