//! Refusals at volume on one connection: a client whose requests are mostly refused by its
//! rate limit keeps its HTTP/2 connection, and none of its requests fails otherwise
//! (decision 0017, "Refusals cost no connection").
//!
//! A refusal answers before the request's body is read. h2 counts the streams it resets
//! because of the peer's late frames over a connection's whole life, and past 1,024 it ends
//! the connection with GOAWAY (ENHANCE_YOUR_CALM, `too_many_internal_resets`), failing every
//! request in flight on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tenantd::proto::PingRequest;
use tenantd::tenancy::{RateLimit, RateLimits};
use tonic::Code;

use crate::helpers::{Metadata, unique_slug};
use crate::rate_limits::{ping_client, server_on, set_limits};
use crate::throwaway::ThrowawayRedis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_refusals_on_one_connection_fail_none_of_its_requests() {
    const CALLERS: u64 = 128;
    const CALLS: u64 = 40000;
    let redis = ThrowawayRedis::start();
    let app = server_on(&redis, None, 1).await;
    let tenant = app.create_tenant(&unique_slug("refused")).await.id;
    set_limits(&redis, &tenant, RateLimits { tenant: Some(RateLimit { per_second: 5, burst: 5 }), api_key: None })
        .await;
    let (admitted, refused, failed) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        // One channel, so one HTTP/2 connection for every caller.
        let mut client = ping_client(&app, Metadata::platform().tenant_id(&tenant));
        let (admitted, refused, failed, first_failure) =
            (admitted.clone(), refused.clone(), failed.clone(), first_failure.clone());
        callers.push(tokio::spawn(async move {
            for _ in 0..CALLS / CALLERS {
                match client.ping(PingRequest::default()).await {
                    Ok(_) => admitted.fetch_add(1, Ordering::Relaxed),
                    Err(status) if status.code() == Code::ResourceExhausted => refused.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        first_failure.lock().expect("lock").get_or_insert_with(|| format!("{status:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for caller in callers {
        caller.await.expect("caller");
    }
    let (admitted, refused, failed) =
        (admitted.load(Ordering::Relaxed), refused.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    // Controls: the limit admitted some and refused well past h2's 1,024.
    assert!(admitted >= 5 && refused > 2048, "admitted {admitted}, refused {refused}");
    assert_eq!(failed, 0, "first failure: {:?}", first_failure.lock().expect("lock"));
    app.stop().await;
}
