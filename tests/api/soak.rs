//! Cancellation soak: many RPCs from many clients, mixing reads and writes for several
//! tenants, with random deadlines and cancellations. Afterwards nothing crossed tenants,
//! no session is left idle in a transaction, the pool is whole again, and the stored
//! writes are exactly the acknowledged ones plus, at most, some whose outcome the client
//! never learned (cancelled after commit).
//!
//! CI runs a short version. The full one (10,000 RPCs, 64 clients):
//! `TENANTD_SOAK_RPCS=10000 TENANTD_SOAK_CLIENTS=64 cargo test --locked --test api soak -- --nocapture`

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tenantd::proto::{CreateUserRequest, GetUserRequest, ListUsersRequest, User};
use tonic::Code;

use crate::helpers::{connect, pg_admin, spawn_app_with, unique_slug};

const TENANTS: usize = 8;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    acknowledged: HashSet<String>,
    attempted: HashSet<String>,
    codes: BTreeMap<String, usize>,
    cross_tenant: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_soak_leaves_no_cross_tenant_result_no_open_transaction_and_no_lost_write() {
    let total_rpcs = setting("TENANTD_SOAK_RPCS", 2_000);
    let clients = setting("TENANTD_SOAK_CLIENTS", 16);
    let app = spawn_app_with(|config| config.database.pool_size = 8).await;
    let mut tenants = Vec::new();
    for index in 0..TENANTS {
        let id = app.create_tenant(&unique_slug(&format!("soak{index}"))).await.id;
        let seed = app.create_user(&id, &format!("t{index}-seed@soak.example")).await.id;
        tenants.push((id, seed));
    }
    let tenants = Arc::new(tenants);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let mut tasks = Vec::new();
    for client_index in 0..clients {
        let tenants = tenants.clone();
        let tally = tally.clone();
        let issued = issued.clone();
        let channel = app.channel.clone();
        tasks.push(tokio::spawn(async move {
            let mut sequence = 0;
            while issued.fetch_add(1, Ordering::Relaxed) < total_rpcs {
                sequence += 1;
                let (tenant_index, kind, deadline, client_side) = {
                    let mut rng = rand::rng();
                    let deadline = match rng.random_range(0..4) {
                        0 => None,
                        _ => Some(Duration::from_micros(rng.random_range(200..8_000))),
                    };
                    (rng.random_range(0..TENANTS), rng.random_range(0..3), deadline, rng.random_bool(0.5))
                };
                let (tenant_id, seed) = &tenants[tenant_index];
                let (_, foreign_seed) = &tenants[(tenant_index + 1) % TENANTS];
                let mut users = tenantd::proto::user_service_client::UserServiceClient::with_interceptor(
                    channel.clone(),
                    crate::helpers::Metadata::platform().tenant_id(tenant_id),
                );
                let email = format!("t{tenant_index}-c{client_index}-{sequence}@soak.example");
                let prefix = format!("t{tenant_index}-");
                let call = async {
                    match kind {
                        0 => {
                            let mut request = tonic::Request::new(CreateUserRequest {
                                user: Some(User { email: email.clone(), ..Default::default() }),
                                request_id: uuid::Uuid::new_v4().to_string(),
                            });
                            if let (Some(deadline), false) = (deadline, client_side) {
                                request.set_timeout(deadline);
                            }
                            users
                                .create_user(request)
                                .await
                                .map(|_| vec![email.clone()])
                                .map_err(|status| status.code())
                        }
                        1 => {
                            let mut request =
                                tonic::Request::new(ListUsersRequest { page_size: 1000, ..Default::default() });
                            if let (Some(deadline), false) = (deadline, client_side) {
                                request.set_timeout(deadline);
                            }
                            let listed = users.list_users(request).await.map_err(|status| status.code())?;
                            Ok(listed.into_inner().users.into_iter().map(|user| user.email).collect())
                        }
                        _ => {
                            // Own seed must be found; the next tenant's seed must not.
                            let own = users.get_user(GetUserRequest { id: seed.clone() }).await;
                            let foreign = users.get_user(GetUserRequest { id: foreign_seed.clone() }).await;
                            let mut seen = Vec::new();
                            if let Ok(user) = own {
                                seen.push(user.into_inner().email);
                            }
                            match foreign {
                                Ok(user) => seen.push(user.into_inner().email),
                                Err(status) if status.code() == Code::NotFound => {}
                                Err(status) => return Err(status.code()),
                            }
                            Ok(seen)
                        }
                    }
                };
                let outcome = match (deadline, client_side) {
                    (Some(deadline), true) => {
                        tokio::time::timeout(deadline, call).await.unwrap_or(Err(Code::Cancelled))
                    }
                    _ => call.await,
                };
                let mut tally = tally.lock().expect("lock");
                if kind == 0 {
                    tally.attempted.insert(email.clone());
                }
                match outcome {
                    Ok(seen) => {
                        *tally.codes.entry("Ok".to_owned()).or_default() += 1;
                        if kind == 0 {
                            tally.acknowledged.insert(email.clone());
                        }
                        for other in seen.into_iter().filter(|seen| !seen.starts_with(&prefix)) {
                            tally.cross_tenant.push(format!("tenant {tenant_index} saw {other}"));
                        }
                    }
                    Err(code) => *tally.codes.entry(format!("{code:?}")).or_default() += 1,
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    let elapsed = started.elapsed();
    let tally = std::mem::take(&mut *tally.lock().expect("lock"));
    assert!(tally.cross_tenant.is_empty(), "cross-tenant results: {:?}", tally.cross_tenant);
    assert!(!tally.codes.contains_key("Internal"), "{:?}", tally.codes);

    // No app-role session is left inside a transaction.
    let admin = connect(&pg_admin(), "postgres").await;
    let settled = Instant::now();
    loop {
        let open: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE usename = 'tenantd_app' AND datname = $1 AND state LIKE 'idle in transaction%'",
                &[&app.database],
            )
            .await
            .expect("activity")
            .get(0);
        if open == 0 {
            break;
        }
        assert!(settled.elapsed() < Duration::from_secs(5), "{open} sessions idle in transaction");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The pool is whole: nothing is checked out, and a full-width burst is served.
    let state = app.pool.state();
    assert_eq!(state.connections, state.idle_connections, "connections still checked out: {state:?}");
    let burst: Vec<_> = (0..8)
        .map(|index| {
            let mut users = app.users(&tenants[index % TENANTS].0);
            tokio::spawn(async move { users.list_users(ListUsersRequest::default()).await.is_ok() })
        })
        .collect();
    for call in burst {
        assert!(call.await.expect("burst"), "a full-width burst is served after the soak");
    }

    // Writes: every acknowledged one is stored; every stored one was attempted.
    let client = connect(&pg_admin(), &app.database).await;
    let stored: HashSet<String> = client
        .query("SELECT email FROM users WHERE email LIKE '%-c%@soak.example'", &[])
        .await
        .expect("users")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost: Vec<_> = tally.acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let phantom: Vec<_> = stored.difference(&tally.attempted).collect();
    assert!(phantom.is_empty(), "stored but never attempted: {phantom:?}");
    let unknown_outcome = stored.len() - tally.acknowledged.len();
    println!(
        "soak: {total_rpcs} RPCs from {clients} clients over {TENANTS} tenants in {elapsed:?}: {:?}; 0 cross-tenant \
         results; 0 sessions idle in transaction; pool whole ({state:?}); {} writes acknowledged and stored, {} stored \
         whose client gave up before the answer, 0 lost",
        tally.codes,
        tally.acknowledged.len(),
        unknown_outcome
    );
    app.stop().await;
}

#[tokio::test]
async fn a_request_that_cannot_get_a_connection_in_time_is_unavailable() {
    let app = spawn_app_with(|config| {
        config.database.pool_size = 1;
        config.database.acquire_timeout = Duration::from_millis(300);
    })
    .await;
    let tenant = app.create_tenant(&unique_slug("busy")).await.id;
    let user = app.create_user(&tenant, "u@busy.example").await.id;
    // Hold the only connection: a read that waits on a lock someone else holds.
    let admin = connect(&pg_admin(), &app.database).await;
    admin.batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await.expect("lock users");
    let mut blocked_client = app.users(&tenant);
    let blocked_user = user.clone();
    let blocked = tokio::spawn(async move { blocked_client.get_user(GetUserRequest { id: blocked_user }).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let waiting = app.users(&tenant).get_user(GetUserRequest { id: user.clone() }).await.expect_err("no connection");
    let waited = started.elapsed();
    assert_eq!(waiting.code(), Code::Unavailable);
    assert_eq!(crate::helpers::reason(&waiting), "DATABASE_POOL_EXHAUSTED");
    assert!(waited < Duration::from_secs(2), "waited {waited:?}, never endlessly");

    admin.batch_execute("COMMIT").await.expect("release");
    blocked.await.expect("task").expect("the blocked read completes once the lock is gone");
    app.users(&tenant).get_user(GetUserRequest { id: user }).await.expect("served again");
    app.stop().await;
}
