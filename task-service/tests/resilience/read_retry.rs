//! The retry rule of `common::db`, one connection at a time: a read whose pooled connection the
//! database terminated runs again on a new one, and a write on such a connection is not run
//! again. Under load (`connection_drop`) which of the two meets a dead connection first is up
//! to timing; here each meets one for certain.

use std::time::Duration;

use common::db::{DatabaseArgs, Db};
use common::postgres::TestDatabase;
use prometheus::{Encoder, Registry, TextEncoder};
use sqlx::{Connection, PgConnection};

use crate::helpers::{eventually, fresh_database, kill_all_connections};

/// A pool of one connection, warmed up: the id of the backend it is connected to.
async fn one_connection_pool(url: String, registry: &Registry) -> (Db, i32) {
    let args = DatabaseArgs {
        database_url: url.into(),
        database_max_connections: 1,
        database_acquire_timeout_ms: 5000,
    };
    let db = Db::connect_lazy(&args, registry).expect("a pool");
    let pid = db.read(backend_pid).await.expect("the first read");
    (db, pid)
}

async fn backend_pid(
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
}

/// Terminates the pool's one connection and waits until its backend is gone, so the pooled
/// connection is dead before it is used again.
async fn terminate(admin_url: &str, database: &str) {
    assert_eq!(
        kill_all_connections(admin_url, database).await,
        1,
        "the pool's connection was there to terminate"
    );
    let gone = eventually(Duration::from_secs(10), || {
        let (admin_url, database) = (admin_url.to_owned(), database.to_owned());
        async move {
            let mut admin = PgConnection::connect(&admin_url).await.unwrap();
            let alive: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(database)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            alive == 0
        }
    })
    .await;
    assert!(
        gone,
        "a backend of {database} still there 10 s after its termination"
    );
}

fn counter(registry: &Registry, name: &str) -> f64 {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    common::test_metrics::sample(&String::from_utf8(text).unwrap(), name)
}

/// A pool of one connection whose backend (the returned id) has been terminated since its
/// first read; the database lives as long as the returned `TestDatabase`.
async fn a_pool_whose_connection_died(registry: &Registry) -> (TestDatabase, Db, i32) {
    let database = fresh_database().await;
    let admin_url = common::postgres::server().await.unwrap().admin_url();
    let (db, first) = one_connection_pool(database.direct_url(), registry).await;
    terminate(admin_url, database.name()).await;
    (database, db, first)
}

#[tokio::test]
async fn a_read_on_a_terminated_connection_runs_again_on_a_new_one() {
    let registry = Registry::new();
    let (_database, db, first) = a_pool_whose_connection_died(&registry).await;
    let second = db.read(backend_pid).await.expect("the read is answered");
    assert_ne!(second, first, "answered on a new connection");
    assert_eq!(counter(&registry, "db_connections_lost_total"), 1.0);
    assert_eq!(counter(&registry, "db_retries_total"), 1.0);
}

#[tokio::test]
async fn a_write_on_a_terminated_connection_is_not_run_again() {
    let registry = Registry::new();
    let (_database, db, first) = a_pool_whose_connection_died(&registry).await;
    let mut conn = db.acquire().await.expect("a pooled connection");
    let written = sqlx::query("CREATE TABLE written_once (n int)")
        .execute(&mut *conn)
        .await;
    let error = db
        .observe(written)
        .expect_err("the write met the dead connection");
    assert!(
        common::lost_connections::is_connection_lost(&error),
        "{error}"
    );
    drop(conn);
    assert_eq!(counter(&registry, "db_connections_lost_total"), 1.0);
    assert_eq!(
        counter(&registry, "db_retries_total"),
        0.0,
        "no write is rerun"
    );
    // The loss is recorded, so the next read finds a live connection.
    assert_ne!(db.read(backend_pid).await.expect("a read after"), first);
}
