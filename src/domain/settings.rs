//! Tenant settings: typed values (flags, numbers, text) a tenant's services read, a
//! resource of the kit.

use std::collections::BTreeMap;

use serde_json::Value;

use super::resource::{Resource, Resources};
use crate::db;
use crate::db::settings::SettingRepository;
pub use crate::db::settings::{SettingPatch, SettingRow as Setting};
use crate::error::{Error, Reason, Result};
use crate::tenancy::{TenantContext, TenantDb};

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

/// Most of a tenant's own settings an effective read considers.
pub const MAX_EFFECTIVE_OVERRIDES: i64 = 1000;

/// Where an effective setting's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The tenant's plan's default.
    PlanDefault,
    /// The tenant's own setting.
    TenantOverride,
}

/// A tenant's effective settings: its plan's defaults beneath its own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveSettings {
    /// The plan's name.
    pub plan: Option<String>,
    /// Key, value and source, in key order.
    pub settings: Vec<(String, Value, Source)>,
}

/// Reads the context's tenant's effective settings (one transaction of two statements).
pub async fn effective(database: &TenantDb, context: &TenantContext) -> Result<EffectiveSettings> {
    let (plan, defaults, own) = database
        .read_steps(context, async move |transaction| {
            let (plan, defaults) =
                db::settings::plan_defaults(transaction).await?.ok_or(Error::new(Reason::TenantNotFound))?;
            let own = db::settings::all(&mut *transaction, MAX_EFFECTIVE_OVERRIDES).await?;
            Ok((plan, defaults, own))
        })
        .await?;
    let defaults: BTreeMap<String, Value> = match defaults {
        Some(defaults) => serde_json::from_value(defaults)
            .map_err(|error| Error::internal(anyhow::Error::new(error).context("plan settings are not an object")))?,
        None => BTreeMap::new(),
    };
    let mut merged: BTreeMap<String, (Value, Source)> =
        defaults.into_iter().map(|(key, value)| (key, (value, Source::PlanDefault))).collect();
    merged.extend(own.into_iter().map(|(key, value)| (key, (value, Source::TenantOverride))));
    let settings = merged.into_iter().map(|(key, (value, source))| (key, value, source)).collect();
    Ok(EffectiveSettings { plan, settings })
}
