//! The pool sends no startup parameter a transaction-mode pooler refuses: PgBouncer, as Neon and
//! most managed poolers run it, rejects `extra_float_digits` (which sqlx sends by default) with
//! `unsupported startup parameter`, and no connection is ever made.

use crate::helpers::fresh_database;

#[tokio::test]
async fn the_pool_leaves_extra_float_digits_at_the_servers_default() {
    let database = fresh_database().await;
    let args = common::db::DatabaseArgs {
        database_url: secrecy::SecretString::from(database.url().to_owned()),
        database_max_connections: 1,
        database_acquire_timeout_ms: 3000,
    };
    let db = common::db::Db::connect_lazy(&args, &prometheus::Registry::new()).unwrap();
    let mut conn = db.acquire().await.unwrap();
    let source: String =
        sqlx::query_scalar("SELECT source FROM pg_settings WHERE name = 'extra_float_digits'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(source, "default", "the client set it at startup");
}

/// A transaction-mode pooler that passes statement names through: PgBouncer with
/// `max_prepared_statements = 0` (or older than 1.21), what a user with an old pooler meets.
/// deploy/pooler/run.sh starts one and runs the tests below with its URL (no database part).
const OLD_POOLER_ENV: &str = "TEST_OLD_POOLER_URL";

/// A fresh test database (made on the server directly), and its URL through the old pooler.
async fn through_old_pooler() -> (common::postgres::TestDatabase, String) {
    let pooler = std::env::var(OLD_POOLER_ENV).unwrap_or_else(|_| {
        panic!("{OLD_POOLER_ENV} must name the old pooler (deploy/pooler/run.sh sets it)")
    });
    let database = fresh_database().await;
    let url = format!("{}/{}", pooler.trim_end_matches('/'), database.name());
    (database, url)
}

/// What the services would meet without their start-up check: sqlx names each connection's
/// statements `sqlx_s_1`, `sqlx_s_2`, …, so through such a pooler two pooled connections find
/// each other's statements on the shared server connection (or miss their own), and a request
/// fails with a 500 at random.
#[tokio::test]
#[ignore = "needs TEST_OLD_POOLER_URL, a pooler with max_prepared_statements = 0 (deploy/pooler/run.sh)"]
async fn through_an_old_pooler_two_connections_lose_their_prepared_statements() {
    let (_database, url) = through_old_pooler().await;
    let pool = common::postgres::pool(&url).await.unwrap();
    let mut first = pool.acquire().await.unwrap();
    let mut second = pool.acquire().await.unwrap();
    let mut failures = Vec::new();
    for _ in 0..2 {
        for (connection, own) in [(&mut first, "first"), (&mut second, "second")] {
            let sql = format!("SELECT '{own}'::text");
            match sqlx::query_scalar::<_, String>(&sql)
                .fetch_one(&mut **connection)
                .await
            {
                Ok(answer) if answer == own => {}
                Ok(answer) => failures.push(format!("{own} got {answer}")),
                Err(error) => failures.push(error.to_string()),
            }
        }
    }
    assert!(
        failures.iter().any(|f| f.contains("already exists")
            || f.contains("does not exist")
            || f.contains(" got ")),
        "{failures:?}"
    );
}

/// Both services refuse to start through such a pooler, with one line saying why and what to
/// set, instead of serving requests that fail later.
#[tokio::test]
#[ignore = "needs TEST_OLD_POOLER_URL, a pooler with max_prepared_statements = 0 (deploy/pooler/run.sh)"]
async fn an_old_pooler_stops_both_services_at_start_up_with_what_to_set() {
    let (_database, url) = through_old_pooler().await;
    let base = [
        "--database-url",
        url.as_str(),
        "--http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--migrate-on-start",
        "false",
        "--jwt-secret",
        crate::helpers::JWT_KEY,
    ];
    let task = task_service::build(task_service::Config::from_serve_args(base).unwrap()).await;
    let auth = auth_service::build(auth_service::Config::from_serve_args(base).unwrap()).await;
    for error in [task.err(), auth.err()] {
        let message = format!("{:#}", error.expect("the start fails"));
        assert!(
            message.contains("transaction-mode pooler that does not keep prepared statements"),
            "{message}"
        );
        assert!(
            message.contains("set max_prepared_statements > 0"),
            "{message}"
        );
        assert!(
            message.contains("direct (non-pooled) endpoint"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }
}
