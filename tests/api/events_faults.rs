//! The event stream under faults: two replicas taking writes, a watcher on each, one watcher
//! dropped and resumed mid-stream, Redis stopped and restarted, PostgreSQL restarted, one
//! replica restarted; what each watcher saw equals the committed events, in stream order,
//! none lost or repeated.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tenantd::domain::events::{Cursor, Position};
use tenantd::proto::watch_events_request::Start;
use tenantd::proto::{CreateUserRequest, User, WatchEventsRequest};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{Metadata, TestApp, start, test_config, unique_slug};
use crate::throwaway::{ThrowawayPostgres, ThrowawayRedis};

/// What a watcher saw: (tenant id, event id), in arrival order, over all its streams.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A replica as its clients reach it: replaced when the replica restarts (as a load
/// balancer would send reconnecting clients to the new process).
type Replica = Arc<Mutex<Arc<TestApp>>>;

fn current(replica: &Replica) -> Arc<TestApp> {
    replica.lock().expect("lock").clone()
}

/// Watches every tenant from `cursor` on `app` until `stop`, resuming from the last cursor
/// received whenever a stream ends; drops its stream on purpose once after `drop_after`
/// events. Returns what it saw and how many streams it opened.
fn watcher(
    replica: Replica,
    cursor: String,
    drop_after: Option<usize>,
    stop: CancellationToken,
) -> (Seen, tokio::task::JoinHandle<usize>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let mut cursor = cursor;
        let mut streams = 0;
        let mut drop_after = drop_after;
        while !stop.is_cancelled() {
            let request = WatchEventsRequest { start: Some(Start::Cursor(cursor.clone())), ..Default::default() };
            let app = current(&replica);
            let Ok(response) = app.events_with(Metadata::platform()).watch_events(request).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            streams += 1;
            let mut stream = response.into_inner();
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return streams,
                    message = stream.next() => message,
                };
                let Some(Ok(message)) = message else { break };
                let mut seen = record.lock().expect("lock");
                seen.extend(message.events.iter().map(|event| (event.tenant_id.clone(), event.id.clone())));
                cursor = message.cursor;
                if drop_after.is_some_and(|after| seen.len() >= after) {
                    // The client goes away mid-stream and comes back with its last cursor.
                    drop_after = None;
                    break;
                }
            }
        }
        streams
    });
    (seen, task)
}

/// Creates users in `tenants`, round robin, on `app` until `stop`; failures are expected
/// during the outages (the truth is read from the database afterwards).
fn writer(
    replica: Replica,
    tenants: Vec<String>,
    name: &'static str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut index = 0usize;
        while !stop.is_cancelled() {
            let tenant = &tenants[index % tenants.len()];
            let request = CreateUserRequest {
                user: Some(User { email: format!("{name}-{index}@faults.example"), ..Default::default() }),
                ..Default::default()
            };
            if current(&replica).users(tenant).create_user(request).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            index += 1;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_replicas_a_resumed_watcher_and_redis_postgres_and_tenantd_restarts_every_watcher_sees_exactly_the_committed_events()
 {
    let postgres = ThrowawayPostgres::start();
    let mut redis = ThrowawayRedis::start();
    let admin = postgres.connect("postgres", "postgres").await;
    admin.batch_execute("CREATE DATABASE tenantd").await.expect("create database");
    tenantd::db::migrations::run_pending(&postgres.url("postgres", "tenantd")).await.expect("migrate");
    let redis_url = redis.url();
    let configure = || {
        let mut config = test_config("unused");
        config.database.url = SecretString::from(postgres.url("tenantd_app", "tenantd"));
        config.database.acquire_timeout = Duration::from_millis(500);
        config.redis.url = SecretString::from(redis_url.clone());
        config.events.poll_interval = Duration::from_millis(300);
        config
    };
    let first = Arc::new(start("unused".into(), configure()).await);
    let second = Arc::new(start("unused".into(), configure()).await);
    for app in [&first, &second] {
        app.wait_for_status("", ServingStatus::Serving).await;
    }
    let tenants =
        vec![first.create_tenant(&unique_slug("efa")).await.id, first.create_tenant(&unique_slug("efb")).await.id];

    // Both watchers start at the same cursor: the bookmark of a stream opened now.
    let mut opening =
        first.events_with(Metadata::platform()).watch_events(WatchEventsRequest::default()).await.expect("watch");
    let start_cursor = opening.get_mut().next().await.expect("a bookmark").expect("a message").cursor;
    drop(opening);
    let start_position = Cursor::decode("cursor", &start_cursor).expect("a cursor").position;

    let first: Replica = Arc::new(Mutex::new(first));
    let second: Replica = Arc::new(Mutex::new(second));
    let stop_watching = CancellationToken::new();
    let (seen_first, watching_first) = watcher(first.clone(), start_cursor.clone(), Some(40), stop_watching.clone());
    let (seen_second, watching_second) = watcher(second.clone(), start_cursor, None, stop_watching.clone());
    let stop_writing = CancellationToken::new();
    let writers = [
        writer(first.clone(), tenants.clone(), "first", stop_writing.clone()),
        writer(second.clone(), tenants.clone(), "second", stop_writing.clone()),
    ];

    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.resume();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    postgres.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    postgres.resume();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // The second replica restarts: its streams end (WATCH_INTERRUPTED with a resume cursor),
    // its writes in flight finish or fail, and its clients come back to the new process.
    let stopping = current(&second);
    stopping.shutdown.cancel();
    let restarted = Arc::new(start("unused".into(), configure()).await);
    *second.lock().expect("lock") = restarted.clone();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop_writing.cancel();
    for writer in writers {
        writer.await.expect("writer");
    }

    // The truth: every committed event after the start, in stream order.
    let database = postgres.connect("postgres", "tenantd").await;
    let rows = database
        .query("SELECT tenant_id::text, id::text, transaction_id FROM audit_events ORDER BY transaction_id, id", &[])
        .await
        .expect("events");
    let committed: Vec<(String, String, Position)> = rows
        .iter()
        .map(|row| {
            let id: String = row.get(1);
            let position = Position { transaction_id: row.get(2), id: id.parse().expect("uuid") };
            (row.get::<_, String>(0), id, position)
        })
        .filter(|(_, _, position)| *position > start_position)
        .collect();
    assert!(committed.len() > 100, "control: the load committed events ({})", committed.len());

    // Everything committed arrives (within 15 s of the end of the load).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for seen in [&seen_first, &seen_second] {
        while seen.lock().expect("lock").len() < committed.len() {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_watching.cancel();
    let streams_first = watching_first.await.expect("watcher");
    let streams_second = watching_second.await.expect("watcher");
    assert!(streams_first >= 2, "the first watcher was resumed ({streams_first} streams)");
    assert!(streams_second >= 2, "the second watcher reconnected after the restart ({streams_second} streams)");
    let stopped = Arc::into_inner(stopping).expect("no client holds the stopped replica");
    stopped.server.await.expect("server task").expect("the stopped replica shut down cleanly");

    let expected: Vec<(String, String)> =
        committed.iter().map(|(tenant, id, _)| (tenant.clone(), id.clone())).collect();
    for (name, seen) in [("first", &seen_first), ("second", &seen_second)] {
        let seen = seen.lock().expect("lock").clone();
        let distinct: HashSet<&(String, String)> = seen.iter().collect();
        let lost = expected.iter().filter(|event| !distinct.contains(event)).count();
        let duplicated = seen.len() - distinct.len();
        assert_eq!((lost, duplicated), (0, 0), "{name}: {lost} lost, {duplicated} duplicated of {}", expected.len());
        assert_eq!(seen.len(), expected.len(), "{name}: nothing beyond the committed events");
        // In stream order, so per tenant in each tenant's order.
        assert_eq!(seen, expected, "{name}: in stream order");
        let mut per_tenant: HashMap<&str, usize> = HashMap::new();
        for (tenant, _) in &seen {
            *per_tenant.entry(tenant.as_str()).or_default() += 1;
        }
        assert_eq!(per_tenant.len(), 2, "{name}: both tenants' events: {per_tenant:?}");
    }
}
