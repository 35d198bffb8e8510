//! The event stream measured (decision 0015), against a running `tenantd serve`:
//! - `latency`: CreateUser at `--rate` per second (open loop) with one platform watcher;
//!   per event, the time from sending the CreateUser to the watcher receiving its event
//!   (an upper bound of commit → delivery) and from its answer to the event (a lower
//!   bound), p50/p99;
//! - `catchup`: `--catchup-events` events appended directly (as the superuser, `--admin-url`),
//!   then a watcher from a cursor before them; events per second until all arrived;
//! - `memory`: the server's VmRSS (`--pid`) idle, with `--watchers` open watchers, and with
//!   one stalled watcher (never reads) while `--stall-events` large events are appended.
//!
//! One JSON line per phase goes to stdout. A benchmark, not a test: it asserts no speed.
//! See bench/events/run.sh for the exact command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use tenantd::proto::event_service_client::EventServiceClient;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::user_service_client::UserServiceClient;
use tenantd::proto::watch_events_request::Start;
use tenantd::proto::{CreateTenantRequest, CreateUserRequest, Tenant, User, WatchEventsRequest};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// tenantd's address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// The platform token.
    #[arg(long)]
    token: String,
    /// The server's process id (for VmRSS).
    #[arg(long)]
    pid: u32,
    /// A superuser URL of tenantd's database (bulk-appends events).
    #[arg(long)]
    admin_url: String,
    /// CreateUser calls per second in the latency phase.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Events appended for the catch-up phase.
    #[arg(long, default_value_t = 100_000)]
    catchup_events: i64,
    /// Watchers opened in the memory phase.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Events (2 kB each) appended while one watcher is stalled.
    #[arg(long, default_value_t = 50_000)]
    stall_events: i64,
}

fn request<T>(message: T, token: &str, tenant: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    if let Some(tenant) = tenant {
        metadata.insert("x-tenant-id", tenant.parse().expect("ascii"));
    }
    request
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn watch(
    channel: &Channel,
    token: &str,
    message: WatchEventsRequest,
) -> anyhow::Result<tonic::Streaming<tenantd::proto::WatchEventsResponse>> {
    let mut client = EventServiceClient::new(channel.clone());
    Ok(client.watch_events(request(message, token, None)).await?.into_inner())
}

async fn append(admin: &tokio_postgres::Client, tenant: &str, count: i64, padding: i32) -> anyhow::Result<()> {
    admin
        .execute(
            "INSERT INTO audit_events (tenant_id, id, actor_type, action, resource_type, resource_id, request_id, details)
             SELECT $1::text::uuid, gen_random_uuid(), 'platform', 'document.update', 'document', g::text, 'bench',
                    jsonb_build_object('padding', repeat('x', $3))
             FROM generate_series(1, $2::bigint) AS g",
            &[&tenant, &count, &padding],
        )
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.server.clone())?.connect().await.context("connect")?;
    let (admin, connection) = tokio_postgres::connect(&args.admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut tenants = TenantServiceClient::new(channel.clone());
    let slug = format!("evbench-{}", uuid::Uuid::new_v4().simple());
    let tenant = tenants
        .create_tenant(request(
            CreateTenantRequest {
                tenant: Some(Tenant {
                    slug: slug[..30].to_owned(),
                    display_name: "bench".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &args.token,
            None,
        ))
        .await?
        .into_inner()
        .id;

    // Latency: open-loop CreateUser at the rate, one watcher of the tenant.
    let mut stream =
        watch(&channel, &args.token, WatchEventsRequest { tenant_ids: vec![tenant.clone()], ..Default::default() })
            .await?;
    let mut cursor = stream.next().await.context("bookmark")??.cursor;
    // Per user: when its CreateUser was sent, and when its answer (after commit) arrived.
    let sent: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    let delivered: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let resumes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let receiver = {
        let (delivered, channel, token, tenant, resumes) =
            (delivered.clone(), channel.clone(), args.token.clone(), tenant.clone(), resumes.clone());
        tokio::spawn(async move {
            loop {
                while let Some(Ok(message)) = stream.next().await {
                    let now = Instant::now();
                    let mut delivered = delivered.lock().expect("lock");
                    for event in message.events {
                        delivered.insert(event.resource_id, now);
                    }
                    cursor = message.cursor;
                }
                // The stream ended (an error with a resume cursor): continue from the last one.
                resumes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let resume = WatchEventsRequest {
                    tenant_ids: vec![tenant.clone()],
                    start: Some(Start::Cursor(cursor.clone())),
                    ..Default::default()
                };
                match watch(&channel, &token, resume).await {
                    Ok(next) => stream = next,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
    };
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate.max(1)));
    let total = args.rate * args.duration;
    let mut calls = Vec::new();
    let started = Instant::now();
    for index in 0..total {
        ticker.tick().await;
        let users = UserServiceClient::new(channel.clone());
        let (token, tenant, sent) = (args.token.clone(), tenant.clone(), sent.clone());
        calls.push(tokio::spawn(async move {
            let mut users = users;
            let at = Instant::now();
            let message = CreateUserRequest {
                user: Some(User { email: format!("u{index}@bench.example"), ..Default::default() }),
                ..Default::default()
            };
            if let Ok(user) = users.create_user(request(message, &token, Some(&tenant))).await {
                sent.lock().expect("lock").insert(user.into_inner().id, (at, Instant::now()));
            }
        }));
    }
    for call in calls {
        let _ = call.await;
    }
    let offered = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    receiver.abort();
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut from_answer = Histogram::<u64>::new(3)?;
    let (sent, delivered) = (sent.lock().expect("lock").clone(), delivered.lock().expect("lock").clone());
    let mut missing = 0;
    let failed = total as usize - sent.len();
    for (id, (at, answered)) in &sent {
        match delivered.get(id) {
            Some(arrived) => {
                histogram.record(arrived.saturating_duration_since(*at).as_micros() as u64)?;
                // Commit happened before the answer: this bounds commit -> delivery from below
                // (0 when the event arrived before the answer did).
                from_answer.record(arrived.saturating_duration_since(*answered).as_micros() as u64)?;
            }
            None => missing += 1,
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "phase": "latency", "rate": args.rate, "committed": sent.len(), "failed_writes": failed, "missing": missing,
            "stream_resumes": resumes.load(std::sync::atomic::Ordering::Relaxed),
            "achieved_per_s": sent.len() as f64 / offered.as_secs_f64(),
            "p50_ms": histogram.value_at_quantile(0.5) as f64 / 1000.0,
            "p99_ms": histogram.value_at_quantile(0.99) as f64 / 1000.0,
            "max_ms": histogram.max() as f64 / 1000.0,
            "after_answer_p50_ms": from_answer.value_at_quantile(0.5) as f64 / 1000.0,
            "after_answer_p99_ms": from_answer.value_at_quantile(0.99) as f64 / 1000.0,
        })
    );

    // Catch-up from a cold cursor.
    let mut before =
        watch(&channel, &args.token, WatchEventsRequest { tenant_ids: vec![tenant.clone()], ..Default::default() })
            .await?;
    let cursor = before.next().await.context("bookmark")??.cursor;
    drop(before);
    append(&admin, &tenant, args.catchup_events, 100).await?;
    let started = Instant::now();
    let mut stream = watch(
        &channel,
        &args.token,
        WatchEventsRequest {
            tenant_ids: vec![tenant.clone()],
            start: Some(Start::Cursor(cursor)),
            ..Default::default()
        },
    )
    .await?;
    let mut received: i64 = 0;
    while received < args.catchup_events {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next()).await?.context("stream")??;
        received += message.events.len() as i64;
    }
    let elapsed = started.elapsed();
    drop(stream);
    println!(
        "{}",
        serde_json::json!({
            "phase": "catchup", "events": received, "seconds": elapsed.as_secs_f64(),
            "events_per_s": received as f64 / elapsed.as_secs_f64(),
        })
    );

    // Memory: idle, with many watchers, with one stalled watcher.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(args.pid);
    let mut open = Vec::new();
    for _ in 0..args.watchers {
        let mut stream =
            watch(&channel, &args.token, WatchEventsRequest { tenant_ids: vec![tenant.clone()], ..Default::default() })
                .await?;
        stream.next().await.context("bookmark")??;
        open.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_watchers = rss_kib(args.pid);
    drop(open);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_watchers = rss_kib(args.pid);
    let stalled =
        watch(&channel, &args.token, WatchEventsRequest { tenant_ids: vec![tenant.clone()], ..Default::default() })
            .await?;
    let mut peak = rss_kib(args.pid);
    let appending = {
        let tenant = tenant.clone();
        let count = args.stall_events;
        async move { append(&admin, &tenant, count, 2000).await }
    };
    let sample = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            peak = peak.max(rss_kib(args.pid));
        }
    };
    let (appended, ()) = tokio::join!(appending, sample);
    appended?;
    drop(stalled);
    println!(
        "{}",
        serde_json::json!({
            "phase": "memory", "idle_kib": idle, "watchers": args.watchers, "with_watchers_kib": with_watchers,
            "after_watchers_closed_kib": after_watchers,
            "stalled_watcher_peak_kib": peak, "stall_events": args.stall_events, "stall_event_bytes": 2000,
        })
    );
    Ok(())
}
