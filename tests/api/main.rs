//! tenantd's integration tests: one binary, real PostgreSQL and Redis, the real server on
//! port 0 called through real tonic clients.

// Test helpers are `pub` for the sibling modules of this one binary.
#![allow(unreachable_pub)]

mod helpers;
mod logs;

mod abuse;
mod archives;
mod attacks;
mod audit;
mod body;
mod catalog;
mod certs;
mod citus;
mod cli;
mod credentials;
mod dev;
mod docs;
mod documents;
mod events;
mod events_faults;
mod faults;
mod health;
mod idempotency;
mod identification;
mod imports;
mod logging;
mod metadata;
mod metrics;
mod migrations;
mod moves;
mod operators;
mod plans;
mod pool;
mod purge;
mod quotas;
mod rate_limits;
mod redis_cluster;
mod refusals;
mod rls;
mod roles;
mod schema_tier;
mod settings;
mod shutdown;
mod soak;
mod tenants;
mod throwaway;
mod tiers;
mod tls;
mod traces;
mod transaction;
mod users;
mod walkthrough;
mod wire;
