//! Tests of the tenant transaction: the tenant statement's shape for any id, and, on the
//! test cluster, that a failed tenant setting stops every statement pipelined behind it.

use super::*;

#[test]
fn the_tenant_statement_is_the_prefix_a_canonical_uuid_and_a_quote() {
    for tenant_id in [Uuid::nil(), Uuid::max(), Uuid::now_v7(), Uuid::new_v4()] {
        let statement = set_tenant_statement(tenant_id);
        assert_statement_shape(&statement);
        assert_eq!(statement, format!("SET LOCAL app.tenant_id = '{tenant_id}'"));
    }
}

/// The property the fuzz target `set_tenant` checks for arbitrary bytes.
fn assert_statement_shape(statement: &str) {
    let value = statement.strip_prefix(SET_TENANT_PREFIX).and_then(|rest| rest.strip_suffix('\''));
    let value = value.unwrap_or_else(|| panic!("unexpected shape: {statement}"));
    assert_eq!(value.len(), 36);
    assert!(value.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte) || byte == b'-'));
    assert_eq!(Uuid::try_parse(value).ok().map(|parsed| parsed.hyphenated().to_string()).as_deref(), Some(value));
}

#[test]
fn uuids_from_any_bytes_give_the_same_shape() {
    let mut bytes = [0u8; 16];
    for round in 0..=255u8 {
        bytes.iter_mut().enumerate().for_each(|(index, byte)| *byte = round.wrapping_mul(31).wrapping_add(index as u8));
        assert_statement_shape(&set_tenant_statement(Uuid::from_bytes(bytes)));
    }
}

/// The admin URL of the test cluster, from the same settings as the integration tests.
fn admin_url() -> String {
    let setting = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let host = setting("TENANTD_TEST_PG_HOST", "127.0.0.1");
    let port = setting("TENANTD_TEST_PG_PORT", "5432");
    let admin = setting("TENANTD_TEST_PG_ADMIN", "postgres");
    match std::env::var("PGPASSWORD") {
        Ok(password) => format!("postgres://{admin}:{password}@{host}:{port}/postgres"),
        Err(_) => format!("postgres://{admin}@{host}:{port}/postgres"),
    }
}

/// Sends `set_statement` the way the tenant transaction sends the tenant setting, with
/// an insert pipelined behind it that also advances a sequence (which no rollback
/// undoes). Returns the insert's outcome, the rows kept, and whether the insert ran.
async fn pipeline_behind(connection: &AppConnection, set_statement: &str) -> (QueryResult<usize>, Vec<String>, bool) {
    use diesel::sql_types::{Bool, Text};

    #[derive(diesel::QueryableByName)]
    struct Marker {
        #[diesel(sql_type = Text)]
        tenant: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Calls {
        #[diesel(sql_type = Bool)]
        is_called: bool,
    }

    let mut shared: Connection<'_> = connection;
    shared.batch_execute("ALTER SEQUENCE pipelined_calls RESTART").await.expect("reset the sequence");
    connection.mark_transaction_open();
    let mut work: Connection<'_> = connection;
    let insert = diesel::sql_query(
        "INSERT INTO pipelined_marker SELECT current_setting('app.tenant_id', true) \
         WHERE nextval('pipelined_calls') > 0",
    )
    .execute(&mut work);
    let scope = Scope { set_tenant: set_statement.to_owned(), set_search_path: None, route_write: None };
    let (begun, inserted) = join!(begin(connection, &scope), insert);
    let succeeded = match (&begun, &inserted) {
        (Ok(()), Ok(count)) => Ok(*count),
        _ => Err(Error::internal(anyhow::anyhow!("the pipeline failed"))),
    };
    end(connection, succeeded).await.ok();
    let mut reader: Connection<'_> = connection;
    let rows: Vec<Marker> =
        diesel::sql_query("SELECT tenant FROM pipelined_marker").load(&mut reader).await.expect("read markers");
    let calls: Calls =
        diesel::sql_query("SELECT is_called FROM pipelined_calls").get_result(&mut reader).await.expect("sequence");
    (inserted, rows.into_iter().map(|row| row.tenant).collect(), calls.is_called)
}

#[tokio::test]
async fn a_failed_tenant_setting_stops_every_statement_pipelined_behind_it() {
    let pool = crate::db::build_pool(
        crate::db::connect::PgTarget::parse(&admin_url()).expect("a URL"),
        1,
        std::time::Duration::from_secs(5),
        &crate::db::Availability::default(),
    );
    let pooled = pool.get().await.expect("a connection to the test cluster");
    let connection: &AppConnection = &pooled;
    let mut shared: Connection<'_> = connection;
    shared
        .batch_execute("CREATE TEMP TABLE pipelined_marker (tenant text); CREATE TEMP SEQUENCE pipelined_calls")
        .await
        .expect("temp table and sequence");

    // A statement in the tenant setting's place that PostgreSQL refuses.
    let (inserted, rows, ran) = pipeline_behind(connection, "SET LOCAL statement_timeout = 'not a duration'").await;
    let refusal = inserted.expect_err("the pipelined insert is refused").to_string();
    assert!(refusal.contains("current transaction is aborted"), "refused as part of an aborted block: {refusal}");
    assert!(!ran, "the insert pipelined behind the failed setting never ran (the sequence did not move)");
    assert!(rows.is_empty(), "{rows:?}");
    assert!(!connection.transaction_open(), "and the transaction was rolled back, not left open");

    // Positive control: with the real setting, the same pipelined insert runs, inside the tenant.
    let tenant_id = Uuid::now_v7();
    let (inserted, rows, ran) = pipeline_behind(connection, &set_tenant_statement(tenant_id)).await;
    assert_eq!(inserted.ok(), Some(1));
    assert!(ran);
    assert_eq!(rows, vec![tenant_id.to_string()], "the pipelined insert saw the tenant");
    assert!(!connection.transaction_open());
}
