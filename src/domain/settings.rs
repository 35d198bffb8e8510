//! Tenant settings: typed values (flags, numbers, text) a tenant's services read, a
//! resource of the kit.

use serde_json::Value;

use super::resource::{Resource, Resources};
use crate::db::settings::SettingRepository;
pub use crate::db::settings::{SettingPatch, SettingRow as Setting};
use crate::error::{Error, Reason, Result};

/// Validates a key: `^[a-z][a-z0-9_.-]{0,62}$`.
pub fn parse_key(field: &str, key: &str) -> Result<String> {
    let bytes = key.as_bytes();
    let valid = (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_.-".contains(byte));
    let pattern = "must match ^[a-z][a-z0-9_.-]{0,62}$";
    if valid { Ok(key.to_owned()) } else { Err(Error::invalid(Reason::FieldMalformed, field, pattern)) }
}

/// Validates a value: a bool, a number, or a string of at most 4096 characters.
pub fn parse_value(field: &str, value: Value) -> Result<Value> {
    match &value {
        Value::Bool(_) | Value::Number(_) => Ok(value),
        Value::String(text) if text.chars().count() <= 4096 => Ok(value),
        Value::String(_) => Err(Error::invalid(Reason::FieldTooLong, field, "must be at most 4096 characters")),
        Value::Null => Err(Error::invalid(Reason::FieldRequired, field, "is required")),
        _ => Err(Error::invalid(Reason::FieldMalformed, field, "must be a bool, a number or a string")),
    }
}

impl Resource for Setting {
    type Repository = SettingRepository;
    const KIND: &'static str = "setting";
    const CREATE_METHOD: &'static str = "CreateSetting";
    const NOT_FOUND: Reason = Reason::SettingNotFound;

    fn from_row(row: Setting) -> Result<Self> {
        Ok(row)
    }

    fn constraint_error(constraint: &str) -> Option<Error> {
        match constraint {
            "tenant_settings_tenant_id_key_key" => {
                Some(Error::already_exists(Reason::SettingKeyAlreadyExists, "setting.key"))
            }
            "tenant_settings_pkey" => Some(Error::already_exists(Reason::SettingAlreadyExists, "setting.id")),
            "tenant_settings_tenant_id_fkey" => Some(Error::new(Reason::TenantNotFound)),
            _ => None,
        }
    }
}

/// The settings of tenants.
pub type Settings = Resources<Setting>;
