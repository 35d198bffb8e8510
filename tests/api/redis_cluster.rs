//! tenantd on a Redis Cluster (decision 0017): rate limits (a two-key script on one slot),
//! the tenant record cache, and invalidations over pub/sub, through a master failing over to
//! its replica.

use std::time::{Duration, Instant};

use tenantd::proto::diagnostics_service_client::DiagnosticsServiceClient;
use tenantd::proto::{PingRequest, SuspendTenantRequest};
use tenantd::tenancy::resolver::TenantRecord;
use tenantd::tenancy::{RateLimit, RateLimits, TenantState};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

use crate::helpers::{Metadata, spawn_app_with, unique_slug};
use crate::throwaway::ThrowawayRedisCluster;

type PingClient =
    DiagnosticsServiceClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Metadata>>;

/// Pings until one is refused RATE_LIMITED (at most 10 s); how many were admitted before.
async fn admitted_until_refused(ping: &mut PingClient) -> usize {
    admitted_until_refused_within(ping, Duration::from_secs(10))
        .await
        .unwrap_or_else(|admitted| panic!("never limited ({admitted} admitted)"))
}

/// Pings until one is refused RATE_LIMITED: how many were admitted before, or, after
/// `patience` without a refusal, how many were admitted in all.
async fn admitted_until_refused_within(ping: &mut PingClient, patience: Duration) -> Result<usize, usize> {
    let started = Instant::now();
    let mut admitted = 0;
    loop {
        match ping.ping(PingRequest {}).await {
            Ok(_) => admitted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let reason = status.get_error_details().error_info().map(|info| info.reason.clone());
                assert_eq!(reason.as_deref(), Some("RATE_LIMITED"));
                return Ok(admitted);
            }
        }
        if started.elapsed() >= patience {
            return Err(admitted);
        }
    }
}

#[tokio::test]
async fn tenantd_limits_caches_and_invalidates_on_a_redis_cluster_through_a_master_failover() {
    let cluster = ThrowawayRedisCluster::start();
    let urls = cluster.urls();
    let app = spawn_app_with(|config| {
        config.redis.url = urls.clone().into();
        config.redis.cluster = true;
    })
    .await;
    app.wait_for_status("redis", ServingStatus::Serving).await;
    let tenant = app.create_tenant(&unique_slug("cluster")).await.id;
    let record_key = format!("t:{{{tenant}}}:record");
    let (master, replica) = cluster.master_and_replica_of(&record_key);

    // The limits, written to the slot's master and announced through a node that is not the
    // first seed (tenantd subscribes to the first that answers): the announcement reaches it
    // because a cluster broadcasts PUBLISH.
    let limits = RateLimits { tenant: Some(RateLimit { per_second: 1, burst: 3 }), api_key: None };
    let json = serde_json::to_string(&TenantRecord {
        state: TenantState::Active,
        limits,
        tier: Default::default(),
        schema_current: true,
        plan: None,
        quotas: Default::default(),
        limits_changed_at: None,
        plan_revision: None,
    })
    .expect("json");
    assert_eq!(cluster.cli(master, &["SET", &record_key, &json, "EX", "600"]).trim(), "OK");
    let announcer = *cluster.ports.last().expect("nodes");
    let mut ping =
        DiagnosticsServiceClient::with_interceptor(app.channel.clone(), Metadata::platform().tenant_id(&tenant));
    let started = Instant::now();
    // An announcement made before tenantd's subscription is up is lost: announce again
    // every second until the limits apply.
    let admitted = loop {
        cluster.cli(announcer, &["PUBLISH", tenantd::cache::INVALIDATION_CHANNEL, &tenant]);
        if let Ok(admitted) = admitted_until_refused_within(&mut ping, Duration::from_secs(1)).await
            && admitted <= 3
        {
            break admitted;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the limits never applied");
    };
    assert!(admitted <= 3, "within the burst of 3, then refused");
    let rate_key = format!("t:{{{tenant}}}:rate:tenant");
    assert!(!cluster.cli(master, &["GET", &rate_key]).trim().is_empty(), "the count lives on the slot's master");

    // The slot's master fails over to its replica; requests are counted there (the promoted
    // node may not know the script: EVALSHA falls back to EVAL) and still limited.
    // A manual failover needs the replica in sync first, and is abandoned (the replica stays
    // one) if it cannot finish within the node timeout, as on a loaded machine: wait for the
    // link, and ask again, by force after the first attempt.
    let started = Instant::now();
    while !cluster.cli(replica, &["INFO", "replication"]).contains("master_link_status:up") {
        assert!(started.elapsed() < Duration::from_secs(15), "the replica never synced with its master");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let mut asked: Option<Instant> = None;
    while !cluster.cli(replica, &["ROLE"]).starts_with("master") {
        assert!(started.elapsed() < Duration::from_secs(30), "the replica was never promoted");
        if asked.is_none_or(|asked| asked.elapsed() > Duration::from_secs(5)) {
            let command: &[&str] =
                if asked.is_none() { &["CLUSTER", "FAILOVER"] } else { &["CLUSTER", "FAILOVER", "FORCE"] };
            assert_eq!(cluster.cli(replica, command).trim(), "OK");
            asked = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // the burst refills (1/s)
    let started = Instant::now();
    loop {
        // Right after the failover, a request may meet the old topology and fall back to
        // the local limiter once; it is still limited either way.
        let admitted = admitted_until_refused(&mut ping).await;
        assert!(admitted <= 3, "{admitted} admitted after the failover");
        if !cluster.cli(replica, &["GET", &rate_key]).trim().is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never counted on the promoted master");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    // Control plane → cache → data plane on the cluster: a suspension is seen at once.
    app.tenants
        .clone()
        .suspend_tenant(SuspendTenantRequest { id: tenant.clone(), ..Default::default() })
        .await
        .expect("suspend");
    let status =
        app.users(&tenant).list_users(tenantd::proto::ListUsersRequest::default()).await.expect_err("suspended");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    app.stop().await;
}
