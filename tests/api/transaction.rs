//! The tenant transaction on the wire: what tenantd writes to PostgreSQL for a read and a
//! write, counted at the socket by a proxy (see `wire.rs`), and that the pipelined
//! statements still run inside the tenant.

use std::time::Duration;

use tenantd::config::{ExposeSecret, SecretString};
use tenantd::proto::GetUserRequest;
use tonic::Code;

use crate::helpers::{pg_host, pg_port, spawn_app_with, unique_slug};
use crate::wire::{Sent, WireProxy};

/// A server whose app-role pool has one connection, through the proxy. Health probes are
/// slowed down so that only requests use that connection during a test.
async fn proxied_app() -> (crate::helpers::TestApp, WireProxy) {
    let upstream = format!("{}:{}", pg_host(), pg_port()).parse().expect("PostgreSQL address");
    let proxy = WireProxy::start(upstream).await;
    let address = proxy.address;
    let app = spawn_app_with(move |config| {
        let direct = format!("@{}:{}/", pg_host(), pg_port());
        let via_proxy = config.database.url.expose_secret().replace(&direct, &format!("@{address}/"));
        config.database.url = SecretString::from(via_proxy);
        config.database.pool_size = 1;
        config.health_interval = Duration::from_millis(60_000);
        // The operation worker's claims would share the one connection.
        config.operations.poll_interval = Duration::from_millis(3_600_000);
    })
    .await;
    (app, proxy)
}

/// The flights written on the connection that carried `tenant`'s transactions since
/// `before` (the flights of every connection, taken earlier).
fn new_flights(proxy: &WireProxy, before: &[Vec<Vec<Sent>>], tenant: &str) -> Vec<Vec<Sent>> {
    let set_tenant = format!("SET LOCAL app.tenant_id = '{tenant}'");
    let now = proxy.flights();
    let mut changed: Vec<Vec<Vec<Sent>>> = now
        .iter()
        .enumerate()
        .map(|(index, flights)| flights[before.get(index).map_or(0, Vec::len)..].to_vec())
        .filter(|flights| flights.iter().flatten().any(|sent| sent.sql() == set_tenant))
        .collect();
    assert_eq!(changed.len(), 1, "one connection carried the tenant's transactions: {now:?}");
    changed.remove(0)
}

fn sqls(flight: &[Sent]) -> Vec<&str> {
    flight.iter().filter(|sent| sent.runs()).map(Sent::sql).collect()
}

#[tokio::test]
async fn a_read_is_one_round_trip_with_the_tenant_set_by_a_statement_of_its_own() {
    let (app, proxy) = proxied_app().await;
    let tenant = app.create_tenant(&unique_slug("wire")).await.id;
    let user = app.create_user(&tenant, "ada@example.com").await;
    let mut users = app.users(&tenant);
    // Warm up: the resolution cache and the statement cache of the one connection.
    for _ in 0..2 {
        users.get_user(GetUserRequest { id: user.id.clone() }).await.expect("warm-up read");
    }

    let before = proxy.flights();
    let read = users.get_user(GetUserRequest { id: user.id.clone() }).await.expect("read").into_inner();
    assert_eq!(read.email, "ada@example.com", "control: the read ran inside the tenant");
    let flights = new_flights(&proxy, &before, &tenant);

    assert_eq!(flights.len(), 1, "one round trip for a read, COMMIT included: {flights:?}");
    let statements = sqls(&flights[0]);
    assert_eq!(statements.len(), 4, "BEGIN, SET, the SELECT and COMMIT: {statements:?}");
    assert_eq!(statements[0], "BEGIN");
    assert_eq!(statements[1], format!("SET LOCAL app.tenant_id = '{tenant}'"), "the SET is a query string of its own");
    assert!(
        statements[2].starts_with("SELECT") && statements[2].contains("\"users\""),
        "then the read: {statements:?}"
    );
    assert_eq!(statements[3], "COMMIT");
    assert!(flights.iter().flatten().all(|sent| !sent.sql().contains("set_config")), "no set_config remains");
    app.stop().await;
}

#[tokio::test]
async fn a_write_sends_begin_the_tenant_and_its_first_statement_in_one_flight() {
    let (app, proxy) = proxied_app().await;
    let tenant = app.create_tenant(&unique_slug("wire")).await.id;
    app.create_user(&tenant, "warm@example.com").await;

    let before = proxy.flights();
    app.create_user(&tenant, "grace@example.com").await;
    let flights = new_flights(&proxy, &before, &tenant);

    let first = sqls(&flights[0]);
    assert_eq!(
        first[..first.len().min(3)],
        [
            "BEGIN".to_owned(),
            format!("SET LOCAL app.tenant_id = '{tenant}'"),
            // The write route (decision 0019): the move lock, shared, and the routing by tier.
            format!("SELECT tenantd_route_write('{tenant}')"),
        ]
    );
    assert!(first.len() == 4 && first[3].starts_with("INSERT INTO \"users\""), "the insert rides along: {flights:?}");
    let rest: Vec<Vec<&str>> = flights[1..].iter().map(|flight| sqls(flight)).collect();
    // No plan, no cap: no quota counter statement at all (decision 0016, "Counting only what is capped").
    assert_eq!(rest.len(), 2, "then the audit insert and COMMIT: 3 round trips in all: {flights:?}");
    assert!(rest[0].len() == 1 && rest[0][0].starts_with("INSERT INTO \"audit_events\""), "{rest:?}");
    assert_eq!(rest[1], ["COMMIT"]);
    assert!(flights.iter().flatten().all(|sent| !sent.sql().contains("tenant_quota_usage")), "{flights:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_read_that_misses_the_statement_cache_still_runs_inside_its_tenant_before_commit() {
    let (app, proxy) = proxied_app().await;
    let tenant = app.create_tenant(&unique_slug("wire")).await.id;
    let other = app.create_tenant(&unique_slug("wire")).await.id;
    let user = app.create_user(&tenant, "linus@example.com").await;

    // The connection has never prepared the SELECT of GetUser, nor the prepared COMMIT.
    let before = proxy.flights();
    let read = app.users(&tenant).get_user(GetUserRequest { id: user.id.clone() }).await.expect("read").into_inner();
    assert_eq!(read.id, user.id, "the first read on the connection sees its tenant's row");
    let flights = new_flights(&proxy, &before, &tenant);
    let sent: Vec<&Sent> = flights.iter().flatten().collect();
    let parse = sent.iter().position(|sent| matches!(sent, Sent::Parse(sql) if sql.contains("\"users\"")));
    let select = sent.iter().position(|sent| matches!(sent, Sent::Execute(sql) if sql.contains("\"users\"")));
    let commit = sent.iter().position(|sent| sent.runs() && sent.sql() == "COMMIT");
    assert!(parse.is_some(), "control: the SELECT was prepared in this transaction: {sent:?}");
    assert!(select < commit && select.is_some(), "COMMIT never overtakes the statement it follows: {sent:?}");

    let denied = app.users(&other).get_user(GetUserRequest { id: user.id.clone() }).await.expect_err("other tenant");
    assert_eq!(denied.code(), Code::NotFound, "and another tenant still cannot see it");
    app.stop().await;
}
