//! How results are printed: aligned tables for people, or one JSON document for scripts.
//!
//! The JSON shape is stable: the proto fields in lowerCamelCase (as protojson names them), but
//! every field is always present: unset timestamps are `null`, empty lists `[]`, empty maps `{}`,
//! enums are their proto names (`ACTIVE`, `READ`), timestamps RFC 3339 strings in UTC.

use std::io::Write;

use prost_types::Timestamp;
use serde_json::{Map, Value, json};

use super::args::OutputFormat;
use crate::proto::{ApiKey, ChannelBinding, CreateApiKeyResponse, CreateOperatorResponse, Operator, Tenant};

/// What a command has to show.
pub(crate) enum Shown {
    /// One tenant.
    Tenant(Tenant),
    /// A page (or, with `--all`, every page) of tenants.
    Tenants { tenants: Vec<Tenant>, next_page_token: String },
    /// One API key, without a secret.
    ApiKey(ApiKey),
    /// A page (or every page) of API keys.
    ApiKeys { api_keys: Vec<ApiKey>, next_page_token: String },
    /// A key just created, with its secret (empty when the response is a replay).
    CreatedApiKey(CreateApiKeyResponse),
    /// One operator, without its key.
    Operator(Operator),
    /// A page (or every page) of operators.
    Operators { operators: Vec<Operator>, next_page_token: String },
    /// An operator just created, with its key.
    CreatedOperator(CreateOperatorResponse),
    /// One long-running operation.
    Operation(crate::proto::longrunning::Operation),
    /// A page (or every page) of operations.
    Operations { operations: Vec<crate::proto::longrunning::Operation>, next_page_token: String },
}

/// Prints `shown` on stdout in `format`. Notes for people (a next page, a secret shown once) go
/// to stderr, so stdout stays exactly the table or the JSON document.
pub(crate) fn print(shown: &Shown, format: OutputFormat) {
    let text = match format {
        OutputFormat::Json => {
            let mut document = serde_json::to_string_pretty(&to_json(shown)).unwrap_or_default();
            document.push('\n');
            document
        }
        OutputFormat::Table => to_table(shown),
    };
    // A closed pipe (`tenantd tenants list | head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    for note in notes(shown, format) {
        let _ = writeln!(std::io::stderr().lock(), "{note}");
    }
}

fn notes(shown: &Shown, format: OutputFormat) -> Vec<String> {
    let mut notes = Vec::new();
    match shown {
        Shown::Tenants { next_page_token, .. }
        | Shown::ApiKeys { next_page_token, .. }
        | Shown::Operators { next_page_token, .. }
        | Shown::Operations { next_page_token, .. }
            if !next_page_token.is_empty() && format == OutputFormat::Table =>
        {
            notes.push(format!("more: --page-token {next_page_token} (or --all)"));
        }
        Shown::CreatedApiKey(response) if response.secret.is_empty() => {
            notes.push("no secret: this is a replay of an earlier request with the same --request-id".to_owned());
        }
        Shown::CreatedApiKey(_) | Shown::CreatedOperator(_) => {
            notes.push("the secret is shown only this once; store it now".to_owned());
        }
        _ => {}
    }
    notes
}

// JSON ------------------------------------------------------------------------------------

fn to_json(shown: &Shown) -> Value {
    match shown {
        Shown::Tenant(tenant) => tenant_json(tenant),
        Shown::Tenants { tenants, next_page_token } => json!({
            "tenants": tenants.iter().map(tenant_json).collect::<Vec<_>>(),
            "nextPageToken": next_page_token,
        }),
        Shown::ApiKey(api_key) => api_key_json(api_key),
        Shown::ApiKeys { api_keys, next_page_token } => json!({
            "apiKeys": api_keys.iter().map(api_key_json).collect::<Vec<_>>(),
            "nextPageToken": next_page_token,
        }),
        Shown::CreatedApiKey(response) => json!({
            "apiKey": response.api_key.as_ref().map(api_key_json),
            "secret": response.secret,
        }),
        Shown::Operator(operator) => operator_json(operator),
        Shown::Operators { operators, next_page_token } => json!({
            "operators": operators.iter().map(operator_json).collect::<Vec<_>>(),
            "nextPageToken": next_page_token,
        }),
        Shown::CreatedOperator(response) => json!({
            "operator": response.operator.as_ref().map(operator_json),
            "secret": response.secret,
        }),
        Shown::Operation(operation) => operation_json(operation),
        Shown::Operations { operations, next_page_token } => json!({
            "operations": operations.iter().map(operation_json).collect::<Vec<_>>(),
            "nextPageToken": next_page_token,
        }),
    }
}

/// An operation's metadata, decoded (the default if it carries none or another type).
fn operation_metadata(operation: &crate::proto::longrunning::Operation) -> crate::proto::OperationMetadata {
    use prost::Message;
    operation
        .metadata
        .as_ref()
        .and_then(|any| crate::proto::OperationMetadata::decode(any.value.as_slice()).ok())
        .unwrap_or_default()
}

/// The outcome of an operation as text: `running`, `ok`, or the error's code and reason.
fn operation_outcome(operation: &crate::proto::longrunning::Operation) -> (String, Value) {
    use crate::proto::longrunning::operation::Result as Outcome;
    use prost::Message;
    match &operation.result {
        None => ("running".to_owned(), Value::Null),
        Some(Outcome::Response(any)) => {
            let result = crate::proto::OperationResult::decode(any.value.as_slice()).ok().and_then(|r| r.result);
            let fields: serde_json::Map<String, Value> = result
                .map(|result| {
                    result.fields.into_iter().map(|(key, value)| (key, Value::String(format!("{value:?}")))).collect()
                })
                .unwrap_or_default();
            ("ok".to_owned(), Value::Object(fields))
        }
        Some(Outcome::Error(status)) => {
            let reason = status
                .details
                .iter()
                .find_map(|any| tonic_types::pb::ErrorInfo::decode(any.value.as_slice()).ok())
                .map(|info| info.reason)
                .unwrap_or_default();
            let code = tonic::Code::from_i32(status.code);
            (
                format!("{code:?} {reason}"),
                json!({"code": format!("{code:?}"), "reason": reason, "message": status.message}),
            )
        }
    }
}

/// An operation in the CLI's JSON shape.
fn operation_json(operation: &crate::proto::longrunning::Operation) -> Value {
    let metadata = operation_metadata(operation);
    let (_, outcome) = operation_outcome(operation);
    json!({
        "name": operation.name,
        "done": operation.done,
        "kind": metadata.kind,
        "tenantId": metadata.tenant_id,
        "phase": metadata.phase,
        "progressPercent": metadata.progress_percent,
        "cancelRequested": metadata.cancel_requested,
        "attempts": metadata.attempts,
        "createdBy": metadata.created_by,
        "createTime": timestamp_json(metadata.create_time.as_ref()),
        "endTime": timestamp_json(metadata.end_time.as_ref()),
        "result": outcome,
    })
}

/// An operator in the CLI's JSON shape.
fn operator_json(operator: &Operator) -> Value {
    json!({
        "id": operator.id,
        "displayName": operator.display_name,
        "role": operator.role().as_str_name(),
        "createTime": timestamp_json(operator.create_time.as_ref()),
        "createdBy": operator.created_by,
        "revokeTime": timestamp_json(operator.revoke_time.as_ref()),
        "revokedBy": operator.revoked_by,
    })
}

/// A tenant in the CLI's JSON shape.
fn tenant_json(tenant: &Tenant) -> Value {
    let labels: Map<String, Value> =
        tenant.labels.iter().map(|(key, value)| (key.clone(), Value::String(value.clone()))).collect();
    json!({
        "id": tenant.id,
        "slug": tenant.slug,
        "displayName": tenant.display_name,
        "state": tenant.state().as_str_name(),
        "isolationTier": tenant.isolation_tier().as_str_name(),
        "labels": labels,
        "domains": tenant.domains,
        "channelBindings": tenant.channel_bindings.iter().map(|binding| json!({
            "channelType": binding.channel_type,
            "externalId": binding.external_id,
        })).collect::<Vec<_>>(),
        "createTime": timestamp_json(tenant.create_time.as_ref()),
        "updateTime": timestamp_json(tenant.update_time.as_ref()),
        "deleteTime": timestamp_json(tenant.delete_time.as_ref()),
        "purgeTime": timestamp_json(tenant.purge_time.as_ref()),
        "etag": tenant.etag,
        "plan": tenant.plan,
    })
}

/// An API key in the CLI's JSON shape.
fn api_key_json(api_key: &ApiKey) -> Value {
    json!({
        "id": api_key.id,
        "tenantId": api_key.tenant_id,
        "displayName": api_key.display_name,
        "scopes": api_key.scopes().map(|scope| scope.as_str_name()).collect::<Vec<_>>(),
        "createTime": timestamp_json(api_key.create_time.as_ref()),
        "expireTime": timestamp_json(api_key.expire_time.as_ref()),
        "revokeTime": timestamp_json(api_key.revoke_time.as_ref()),
        "lastUsedTime": timestamp_json(api_key.last_used_time.as_ref()),
    })
}

fn timestamp_json(timestamp: Option<&Timestamp>) -> Value {
    timestamp.map_or(Value::Null, |timestamp| Value::String(timestamp.to_string()))
}

// Tables ----------------------------------------------------------------------------------

fn to_table(shown: &Shown) -> String {
    match shown {
        Shown::Tenant(tenant) => fields(&tenant_fields(tenant)),
        Shown::Tenants { tenants, .. } => columns(
            &["ID", "SLUG", "STATE", "DISPLAY NAME", "CREATED"],
            tenants
                .iter()
                .map(|tenant| {
                    vec![
                        tenant.id.clone(),
                        tenant.slug.clone(),
                        tenant.state().as_str_name().to_owned(),
                        tenant.display_name.clone(),
                        time_cell(tenant.create_time.as_ref()),
                    ]
                })
                .collect(),
        ),
        Shown::ApiKey(api_key) => fields(&api_key_fields(api_key)),
        Shown::ApiKeys { api_keys, .. } => columns(
            &["ID", "NAME", "SCOPES", "CREATED", "EXPIRES", "REVOKED", "LAST USED"],
            api_keys
                .iter()
                .map(|api_key| {
                    vec![
                        api_key.id.clone(),
                        api_key.display_name.clone(),
                        scopes_cell(api_key),
                        time_cell(api_key.create_time.as_ref()),
                        time_cell(api_key.expire_time.as_ref()),
                        time_cell(api_key.revoke_time.as_ref()),
                        time_cell(api_key.last_used_time.as_ref()),
                    ]
                })
                .collect(),
        ),
        Shown::CreatedApiKey(response) => {
            let mut rows = response.api_key.as_ref().map(api_key_fields).unwrap_or_default();
            rows.push(("secret", if response.secret.is_empty() { "-".to_owned() } else { response.secret.clone() }));
            fields(&rows)
        }
        Shown::Operator(operator) => fields(&operator_fields(operator)),
        Shown::Operation(operation) => {
            let metadata = operation_metadata(operation);
            let (outcome, _) = operation_outcome(operation);
            fields(&[
                ("name", operation.name.clone()),
                ("kind", metadata.kind),
                ("tenant", metadata.tenant_id),
                ("phase", metadata.phase),
                ("progress", format!("{}%", metadata.progress_percent)),
                ("done", operation.done.to_string()),
                ("outcome", outcome),
                ("attempts", metadata.attempts.to_string()),
                ("created", time_cell(metadata.create_time.as_ref())),
                ("ended", time_cell(metadata.end_time.as_ref())),
            ])
        }
        Shown::Operations { operations, .. } => columns(
            &["NAME", "KIND", "TENANT", "PHASE", "OUTCOME", "CREATED"],
            operations
                .iter()
                .map(|operation| {
                    let metadata = operation_metadata(operation);
                    vec![
                        operation.name.clone(),
                        metadata.kind,
                        metadata.tenant_id,
                        metadata.phase,
                        operation_outcome(operation).0,
                        time_cell(metadata.create_time.as_ref()),
                    ]
                })
                .collect(),
        ),
        Shown::Operators { operators, .. } => columns(
            &["ID", "NAME", "ROLE", "CREATED", "CREATED BY", "REVOKED"],
            operators
                .iter()
                .map(|operator| {
                    vec![
                        operator.id.clone(),
                        operator.display_name.clone(),
                        operator.role().as_str_name().to_owned(),
                        time_cell(operator.create_time.as_ref()),
                        operator.created_by.clone(),
                        time_cell(operator.revoke_time.as_ref()),
                    ]
                })
                .collect(),
        ),
        Shown::CreatedOperator(response) => {
            let mut rows = response.operator.as_ref().map(operator_fields).unwrap_or_default();
            rows.push(("secret", response.secret.clone()));
            fields(&rows)
        }
    }
}

fn operator_fields(operator: &Operator) -> Vec<(&'static str, String)> {
    vec![
        ("id", operator.id.clone()),
        ("name", operator.display_name.clone()),
        ("role", operator.role().as_str_name().to_owned()),
        ("created", time_cell(operator.create_time.as_ref())),
        ("created by", operator.created_by.clone()),
        ("revoked", time_cell(operator.revoke_time.as_ref())),
        ("revoked by", operator.revoked_by.clone()),
    ]
}

fn tenant_fields(tenant: &Tenant) -> Vec<(&'static str, String)> {
    let labels: Vec<String> = tenant.labels.iter().map(|(key, value)| format!("{key}={value}")).collect();
    let channels: Vec<String> = tenant.channel_bindings.iter().map(channel_cell).collect();
    vec![
        ("id", tenant.id.clone()),
        ("slug", tenant.slug.clone()),
        ("display name", tenant.display_name.clone()),
        ("state", tenant.state().as_str_name().to_owned()),
        ("isolation tier", tenant.isolation_tier().as_str_name().to_owned()),
        ("labels", list_cell(&labels)),
        ("domains", list_cell(&tenant.domains)),
        ("channels", list_cell(&channels)),
        ("plan", if tenant.plan.is_empty() { "-".to_owned() } else { tenant.plan.clone() }),
        ("created", time_cell(tenant.create_time.as_ref())),
        ("updated", time_cell(tenant.update_time.as_ref())),
        ("deleted", time_cell(tenant.delete_time.as_ref())),
        ("purged", time_cell(tenant.purge_time.as_ref())),
        ("etag", tenant.etag.clone()),
    ]
}

fn api_key_fields(api_key: &ApiKey) -> Vec<(&'static str, String)> {
    vec![
        ("id", api_key.id.clone()),
        ("tenant id", api_key.tenant_id.clone()),
        ("name", api_key.display_name.clone()),
        ("scopes", scopes_cell(api_key)),
        ("created", time_cell(api_key.create_time.as_ref())),
        ("expires", time_cell(api_key.expire_time.as_ref())),
        ("revoked", time_cell(api_key.revoke_time.as_ref())),
        ("last used", time_cell(api_key.last_used_time.as_ref())),
    ]
}

fn channel_cell(binding: &ChannelBinding) -> String {
    format!("{}:{}", binding.channel_type, binding.external_id)
}

fn scopes_cell(api_key: &ApiKey) -> String {
    let scopes: Vec<String> = api_key.scopes().map(|scope| scope.as_str_name().to_owned()).collect();
    list_cell(&scopes)
}

fn list_cell(items: &[String]) -> String {
    if items.is_empty() { "-".to_owned() } else { items.join(",") }
}

/// A time to the second, in UTC; `-` when unset.
fn time_cell(timestamp: Option<&Timestamp>) -> String {
    timestamp.map_or_else(|| "-".to_owned(), |timestamp| Timestamp { seconds: timestamp.seconds, nanos: 0 }.to_string())
}

/// One `name  value` line per field, values aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
    rows.iter().map(|(name, value)| format!("{name:<width$}  {}\n", display(value))).collect()
}

/// A header line and one line per row, columns aligned.
fn columns(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().map(|row| row.iter().map(|cell| display(cell)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|header| header.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}", width = *width)).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut table = line(headers.to_vec());
    for row in &rows {
        table.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    table
}

/// A cell on one line: control characters (a newline in a display name) become spaces, and
/// an empty value is `-` so columns stay countable.
fn display(value: &str) -> String {
    if value.is_empty() {
        return "-".to_owned();
    }
    value.chars().map(|character| if character.is_control() { ' ' } else { character }).collect()
}
