//! gRPC adapters: take the request apart, validate into domain types, call one domain
//! function, map the result. No SQL here, and no proto types below here.

use chrono::{DateTime, Utc};

mod tenants;
mod users;

pub use tenants::TenantApi;
pub use users::UserApi;

use crate::domain::UpdateMask;
use crate::error::{Error, Result};

/// A proto timestamp from a chrono one.
fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A required message field.
fn required<T>(field: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| Error::invalid("FIELD_REQUIRED", field, "is required"))
}

/// The validated `update_mask` of an update request.
fn update_mask(mask: Option<prost_types::FieldMask>, updatable: &[&str]) -> Result<UpdateMask> {
    UpdateMask::parse(mask.map(|mask| mask.paths).unwrap_or_default(), updatable)
}
