//! gRPC adapters: take the request apart, validate into domain types, call one domain
//! function, map the result. No SQL here, and no proto types below here.
//!
//! The adapter layer also holds what stands between the wire and the handlers: the
//! [`gateway`]'s tower layers and the servers' [`codec`].

use chrono::{DateTime, Utc};

mod audit;
pub mod codec;
mod diagnostics;
mod documents;
mod events;
pub mod gateway;
mod operations;
mod operators;
mod plans;
mod quotas;
mod resource;
mod settings;
mod tenants;
mod users;

pub use audit::AuditApi;
pub use diagnostics::DiagnosticsApi;
pub use documents::DocumentApi;
pub use events::EventApi;
pub use operations::OperationApi;
pub use operators::OperatorApi;
pub use plans::PlanApi;
pub use quotas::QuotaApi;
pub use settings::SettingApi;
pub use tenants::TenantApi;
pub use users::UserApi;

use crate::domain::UpdateMask;
use crate::error::{Error, Reason, Result};

/// A proto timestamp from a chrono one.
fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A chrono time from a proto timestamp, validated.
fn time(field: &str, timestamp: prost_types::Timestamp) -> Result<DateTime<Utc>> {
    u32::try_from(timestamp.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .ok_or_else(|| Error::invalid(Reason::TimestampInvalid, field, "is not a valid timestamp"))
}

/// A required message field.
fn required<T>(field: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| Error::invalid(Reason::FieldRequired, field, "is required"))
}

/// The validated `update_mask` of an update request.
fn update_mask(mask: Option<prost_types::FieldMask>, updatable: &[&str]) -> Result<UpdateMask> {
    UpdateMask::parse(mask.map(|mask| mask.paths).unwrap_or_default(), updatable)
}

/// JSON from a `google.protobuf.Value`. Non-finite numbers have no JSON form and are
/// INVALID_ARGUMENT (`reason`); nesting deeper than 32 levels too.
fn value_to_json(reason: Reason, field: &str, value: prost_types::Value) -> Result<serde_json::Value> {
    fn convert(reason: Reason, field: &str, value: prost_types::Value, depth: usize) -> Result<serde_json::Value> {
        use prost_types::value::Kind;
        if depth > 32 {
            return Err(Error::invalid(reason, field, "is nested more than 32 levels deep"));
        }
        Ok(match value.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::BoolValue(value)) => serde_json::Value::Bool(value),
            Some(Kind::NumberValue(value)) => serde_json::Number::from_f64(value)
                .map(serde_json::Value::Number)
                .ok_or_else(|| Error::invalid(reason, field, "numbers must be finite"))?,
            Some(Kind::StringValue(value)) => serde_json::Value::String(value),
            Some(Kind::ListValue(list)) => serde_json::Value::Array(
                list.values.into_iter().map(|item| convert(reason, field, item, depth + 1)).collect::<Result<_>>()?,
            ),
            Some(Kind::StructValue(object)) => serde_json::Value::Object(
                object
                    .fields
                    .into_iter()
                    .map(|(key, item)| Ok((key, convert(reason, field, item, depth + 1)?)))
                    .collect::<Result<_>>()?,
            ),
        })
    }
    convert(reason, field, value, 0)
}

/// JSON from a `google.protobuf.Struct` (see [`value_to_json`]).
fn struct_to_json(field: &str, value: prost_types::Struct) -> Result<serde_json::Value> {
    let value = prost_types::Value { kind: Some(prost_types::value::Kind::StructValue(value)) };
    value_to_json(Reason::MetadataInvalid, field, value)
}

/// A `google.protobuf.Value` from JSON.
fn json_to_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(value) => Kind::BoolValue(value),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        serde_json::Value::String(value) => Kind::StringValue(value),
        serde_json::Value::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.into_iter().map(json_to_value).collect() })
        }
        serde_json::Value::Object(object) => Kind::StructValue(prost_types::Struct {
            fields: object.into_iter().map(|(key, item)| (key, json_to_value(item))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` from a JSON object (anything else becomes an empty Struct).
fn json_to_struct(value: serde_json::Value) -> prost_types::Struct {
    match json_to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(object)) => object,
        _ => prost_types::Struct::default(),
    }
}
