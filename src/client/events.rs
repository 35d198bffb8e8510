//! `tenantd events watch`: WatchEvents as JSON lines on stdout, one event per line; without
//! `--follow` it ends once the stream says it has caught up. The last
//! cursor received goes to stderr as `cursor: <cursor>` when the command ends, so that a
//! later `--from-cursor` continues exactly there. With `--follow`, an interrupted stream
//! (WATCHER_TOO_SLOW, WATCH_INTERRUPTED, UNAVAILABLE) is resumed from the last cursor.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};

use super::args::{EventsArgs, EventsCommand, WatchEventsArgs};
use super::connection::{Failure, authorization, connect, describe_status};
use crate::proto::event_service_client::EventServiceClient;
use crate::proto::watch_events_request::Start;
use crate::proto::{TenantEvent, WatchEventsRequest};

/// Without `--follow`, the command gives up waiting for the stream to catch up after this.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);
/// Wait before resuming an interrupted stream.
const RESUME_DELAY: Duration = Duration::from_millis(500);

/// `tenantd events ...`.
pub async fn run(args: EventsArgs) -> ExitCode {
    match args.command {
        EventsCommand::Watch(watch) => match watch_events(watch).await {
            Ok(()) => ExitCode::from(super::EXIT_OK),
            Err(failure) => failure.report(),
        },
    }
}

async fn watch_events(args: WatchEventsArgs) -> Result<(), Failure> {
    let credential = match (&args.api_key, &args.client.token) {
        (Some(key), _) => key.expose_secret().to_owned(),
        (None, Some(token)) => token.expose_secret().to_owned(),
        (None, None) => {
            return Err(Failure::Usage("no credential: pass --token (platform) or --api-key".to_owned()));
        }
    };
    let authorization = authorization(&credential)?;
    let start = match (&args.from_cursor, &args.since) {
        (Some(cursor), _) => Some(Start::Cursor(cursor.clone())),
        (None, Some(since)) => {
            let time = chrono::DateTime::parse_from_rfc3339(since)
                .map_err(|_| Failure::Usage(format!("--since `{since}` is not an RFC 3339 time")))?;
            let nanos = i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0);
            Some(Start::StartTime(prost_types::Timestamp { seconds: time.timestamp(), nanos }))
        }
        (None, None) => None,
    };
    let mut request = WatchEventsRequest {
        tenant_ids: args.tenants.clone(),
        event_types: args.event_types.clone(),
        resource_types: args.resource_types.clone(),
        start,
    };
    let mut last_cursor: Option<String> = None;
    let outcome = loop {
        let ended = stream_once(&args, &authorization, request.clone(), &mut last_cursor).await;
        match ended {
            Err(Failure::Status(status)) if args.follow && resumable(status.code()) => {
                let _ = writeln!(std::io::stderr().lock(), "{}resuming", describe_status(&status));
            }
            Err(Failure::Unreachable(message)) if args.follow => {
                let _ = writeln!(std::io::stderr().lock(), "error: cannot reach the server: {message}; retrying");
            }
            other => break other,
        }
        if let Some(cursor) = &last_cursor {
            request.start = Some(Start::Cursor(cursor.clone()));
        }
        tokio::time::sleep(RESUME_DELAY).await;
    };
    if let Some(cursor) = last_cursor {
        let _ = writeln!(std::io::stderr().lock(), "cursor: {cursor}");
    }
    outcome
}

/// Statuses after which the same watch, resumed from its cursor, can succeed.
fn resumable(code: Code) -> bool {
    matches!(code, Code::ResourceExhausted | Code::Unavailable | Code::DeadlineExceeded)
}

/// One stream: prints its events until it ends (or, without `--follow`, goes idle).
async fn stream_once(
    args: &WatchEventsArgs,
    authorization: &MetadataValue<Ascii>,
    request: WatchEventsRequest,
    last_cursor: &mut Option<String>,
) -> Result<(), Failure> {
    let channel = connect(&args.client.server).await?;
    let mut client = EventServiceClient::new(channel);
    let mut call = tonic::Request::new(request);
    call.metadata_mut().insert("authorization", authorization.clone());
    let mut stream = client.watch_events(call).await.map_err(Failure::Status)?.into_inner();
    let mut messages = 0usize;
    loop {
        let message = if args.follow {
            stream.next().await
        } else {
            match tokio::time::timeout(CATCH_UP_LIMIT, stream.next()).await {
                Ok(message) => message,
                Err(_) => return Err(Failure::Unreachable("the stream did not catch up within 30s".to_owned())),
            }
        };
        messages += 1;
        let message = match message {
            None => return Ok(()),
            Some(Err(status)) => return Err(Failure::Status(status)),
            Some(Ok(message)) => message,
        };
        let mut stdout = std::io::stdout().lock();
        for event in &message.events {
            let _ = writeln!(stdout, "{}", event_json(event));
        }
        let _ = stdout.flush();
        let caught_up = message.events.is_empty() && messages > 1;
        *last_cursor = Some(message.cursor);
        // The first message is the start's bookmark; the next one without events says the
        // stream has caught up with everything committed before the call.
        if caught_up && !args.follow {
            return Ok(());
        }
    }
}

/// An event in the CLI's JSON shape (proto field names in lowerCamelCase).
fn event_json(event: &TenantEvent) -> Value {
    json!({
        "id": event.id,
        "cursor": event.cursor,
        "tenantId": event.tenant_id,
        "eventType": event.event_type,
        "resourceType": event.resource_type,
        "resourceId": event.resource_id,
        "changedFields": event.changed_fields,
        "details": event.details.clone().map_or(Value::Null, struct_json),
        "eventTime": event.event_time.as_ref().map_or(Value::Null, |time| Value::String(time.to_string())),
        "actorType": event.actor_type,
        "actorId": event.actor_id,
    })
}

fn struct_json(object: prost_types::Struct) -> Value {
    Value::Object(object.fields.into_iter().map(|(key, value)| (key, value_json(value))).collect())
}

fn value_json(value: prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(value)) => Value::Bool(value),
        Some(Kind::NumberValue(value)) => serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(value)) => Value::String(value),
        Some(Kind::ListValue(list)) => Value::Array(list.values.into_iter().map(value_json).collect()),
        Some(Kind::StructValue(object)) => struct_json(object),
    }
}
