//! Pool hygiene: a pooled connection never carries a tenant, or an open transaction, into
//! another request.

use std::time::{Duration, Instant};

use rand::Rng;
use tenantd::proto::{CreateUserRequest, GetUserRequest, ListUsersRequest, User};

use crate::helpers::{connect, pg_admin, spawn_app_with, unique_slug};

#[tokio::test]
async fn alternating_tenants_on_a_single_connection_never_crosses_tenants() {
    let app = spawn_app_with(|config| config.database.pool_size = 1).await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    let user_a = app.create_user(&tenant_a, "a@a.example").await;
    let user_b = app.create_user(&tenant_b, "b@b.example").await;
    let mut as_a = app.users(&tenant_a);
    let mut as_b = app.users(&tenant_b);
    for round in 0..1000 {
        let (client, own, foreign) =
            if round % 2 == 0 { (&mut as_a, &user_a, &user_b) } else { (&mut as_b, &user_b, &user_a) };
        if round % 4 < 2 {
            let listed = client.list_users(ListUsersRequest::default()).await.expect("list").into_inner().users;
            assert_eq!(listed, vec![own.clone()], "round {round}: exactly the tenant's own user");
        } else {
            let got = client.get_user(GetUserRequest { id: own.id.clone() }).await.expect("own user");
            assert_eq!(got.into_inner().id, own.id);
            let status = client.get_user(GetUserRequest { id: foreign.id.clone() }).await.expect_err("foreign user");
            assert_eq!(status.code(), tonic::Code::NotFound, "round {round}");
        }
    }
    app.stop().await;
}

/// Number of app-role sessions of `database` that sit idle inside a transaction.
async fn idle_in_transaction(database: &str) -> i64 {
    connect(&pg_admin(), "postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE usename = 'tenantd_app' AND datname = $1 AND state LIKE 'idle in transaction%'",
            &[&database],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// Transactions of `database` that ended in a rollback.
async fn rollbacks(database: &str) -> i64 {
    connect(&pg_admin(), "postgres")
        .await
        .query_one("SELECT xact_rollback FROM pg_stat_database WHERE datname = $1", &[&database])
        .await
        .expect("pg_stat_database")
        .get(0)
}

#[tokio::test]
async fn cancelled_rpcs_leave_no_open_transaction_and_no_tenant_behind() {
    let app = spawn_app_with(|config| config.database.pool_size = 4).await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    let user_a = app.create_user(&tenant_a, "a@a.example").await;
    let user_b = app.create_user(&tenant_b, "b@b.example").await;

    // Calibrate: deadlines spread from 0 to twice a typical call's latency cut RPCs at
    // every point: waiting for a connection, inside the transaction, while committing.
    let mut samples = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        app.users(&tenant_a).list_users(ListUsersRequest::default()).await.expect("warm-up");
        samples.push(started.elapsed());
    }
    samples.sort();
    let typical = samples[samples.len() / 2];
    println!("typical ListUsers latency: {typical:?}");

    let rollbacks_before = rollbacks(&app.database).await;
    let mut tasks = Vec::new();
    for worker in 0..8u32 {
        let tenant = if worker % 2 == 0 { tenant_a.clone() } else { tenant_b.clone() };
        let mut client = app.users(&tenant);
        tasks.push(tokio::spawn(async move {
            let mut completed = 0;
            for index in 0..50u32 {
                let (deadline, by_deadline) = {
                    let mut rng = rand::rng();
                    // One call in four runs without a deadline, so connections are
                    // re-established and the pool keeps working between cancellations.
                    let factor = if rng.random_bool(0.25) { 1000.0 } else { rng.random_range(0.0..3.0) };
                    (typical.mul_f64(factor), rng.random_bool(0.5))
                };
                let write = index % 3 == 0;
                let email = format!("c{worker}-{index}@x.example");
                let ok = if by_deadline {
                    // The server enforces grpc-timeout and drops the handler mid-flight.
                    if write {
                        let mut request = tonic::Request::new(CreateUserRequest {
                            user: Some(User { email, ..Default::default() }),
                            ..Default::default()
                        });
                        request.set_timeout(deadline);
                        client.create_user(request).await.is_ok()
                    } else {
                        let mut request = tonic::Request::new(ListUsersRequest::default());
                        request.set_timeout(deadline);
                        client.list_users(request).await.is_ok()
                    }
                } else {
                    // The client goes away: the stream is reset and the server drops the handler.
                    let call = async {
                        if write {
                            let request = CreateUserRequest {
                                user: Some(User { email, ..Default::default() }),
                                ..Default::default()
                            };
                            client.create_user(request).await.is_ok()
                        } else {
                            client.list_users(ListUsersRequest::default()).await.is_ok()
                        }
                    };
                    tokio::time::timeout(deadline, call).await.unwrap_or(false)
                };
                completed += usize::from(ok);
            }
            completed
        }));
    }
    let mut completed = 0;
    for task in tasks {
        completed += task.await.expect("client task");
    }
    println!("{completed} of 400 RPCs completed; the rest were cancelled or timed out");
    // The test is only meaningful if deadlines cut some RPCs and let others through.
    assert!(completed > 0 && completed < 400, "{completed} of 400 completed");

    // Proof that cancellations landed inside transactions: PostgreSQL rolled some back
    // (a connection closed mid-transaction counts as a rollback; statistics arrive late).
    let started = Instant::now();
    let rolled_back = loop {
        let rolled_back = rollbacks(&app.database).await - rollbacks_before;
        if rolled_back > 0 || started.elapsed() > Duration::from_secs(5) {
            break rolled_back;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{rolled_back} transactions were rolled back by cancellation");
    assert!(rolled_back > 0, "no RPC was cancelled inside its transaction; the test proved nothing");

    // PostgreSQL notices closed connections promptly, but not synchronously: poll.
    let started = Instant::now();
    loop {
        let open = idle_in_transaction(&app.database).await;
        if open == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{open} app-role sessions left idle in transaction");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The next requests see only their own tenant.
    for _ in 0..20 {
        let listed = app.users(&tenant_a).list_users(ListUsersRequest { page_size: 1000, ..Default::default() }).await;
        let users = listed.expect("list after cancellations").into_inner().users;
        assert!(users.iter().any(|user| user.id == user_a.id), "control: A's own user is visible");
        assert!(!users.iter().any(|user| user.id == user_b.id), "B's user never appears for A");
        let status = app.users(&tenant_b).get_user(GetUserRequest { id: user_a.id.clone() }).await.expect_err("denied");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
    app.stop().await;
}
