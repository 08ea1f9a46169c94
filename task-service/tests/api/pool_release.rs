//! A pooled connection goes back to the pool without a round trip when it is at rest, and after
//! one when it is not: the ROLLBACK of a dropped transaction reaches the server, and the answer
//! of a dropped statement is read, before the connection can be taken again (our sqlx patch,
//! `vendor/README.md`).
//!
//! Seen from the server: a backend moves `pg_stat_activity.state_change` each time it answers
//! `ReadyForQuery`, so a ping on release (`Sync`, answered by `ReadyForQuery`) would move it.
//! On the server directly, because a pooler in between answers or forwards the ping itself.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::db::{DatabaseArgs, Db};
use common::postgres::TestDatabase;
use sqlx::PgPool;
use tokio::time::{Instant, sleep};

use crate::helpers::fresh_database;

/// Only a hang guard: the tests wait for states, never for a duration.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// A fresh database, the services' own pool of one connection to it, and a pool to watch that
/// connection's backend from; both on the server directly.
async fn one_connection_and_an_observer() -> (TestDatabase, Db, PgPool) {
    let database = fresh_database().await;
    let args = DatabaseArgs {
        database_url: secrecy::SecretString::from(database.direct_url()),
        database_max_connections: 1,
        database_acquire_timeout_ms: 3000,
    };
    let db = Db::connect_lazy(&args, &prometheus::Registry::new()).expect("a pool");
    let observer = common::postgres::pool(&database.direct_url())
        .await
        .expect("an observer pool");
    (database, db, observer)
}

async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("the backend's pid")
}

/// `pid`'s state and when it last changed, as the server has them now.
async fn backend_now(observer: &PgPool, pid: i32) -> (Option<String>, Option<DateTime<Utc>>) {
    sqlx::query_as("SELECT state, state_change FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(observer)
        .await
        .expect("the backend is listed")
}

/// `pid`'s state and when it last changed, once the state is `want`.
async fn backend_state(observer: &PgPool, pid: i32, want: &str) -> DateTime<Utc> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let (state, changed) = backend_now(observer, pid).await;
        if state.as_deref() == Some(want) {
            return changed.expect("a listed state has its change time");
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} stayed {state:?}, not {want}"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the pool holds its one connection idle again: the release has finished.
async fn released(db: &Db) {
    let deadline = Instant::now() + HANG_GUARD;
    while db.pool().num_idle() < 1 {
        assert!(Instant::now() < deadline, "the connection never went back");
        sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_connection_with_nothing_to_send_goes_back_without_a_round_trip() {
    let (_database, db, observer) = one_connection_and_an_observer().await;

    let mut conn = db.acquire().await.expect("a connection");
    let pid = backend_pid(&mut conn).await;
    let answered = backend_state(&observer, pid, "idle").await;
    drop(conn);
    released(&db).await;
    assert_eq!(
        backend_state(&observer, pid, "idle").await,
        answered,
        "the release sent the server a message it answered"
    );

    let mut again = db.acquire().await.expect("the connection again");
    assert_eq!(
        backend_pid(&mut again).await,
        pid,
        "the same connection, alive"
    );
}

#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_before_the_connection_goes_back() {
    let (_database, db, observer) = one_connection_and_an_observer().await;

    let mut transaction = db.begin().await.expect("a transaction");
    let pid = backend_pid(&mut transaction).await;
    backend_state(&observer, pid, "idle in transaction").await;
    // Dropped without commit or rollback, as when a request's future is dropped mid-way: sqlx
    // queues a ROLLBACK, which only the release can send.
    drop(transaction);
    released(&db).await;
    let (state, _) = backend_now(&observer, pid).await;
    assert_eq!(
        state.as_deref(),
        Some("idle"),
        "the connection went back with its transaction still open"
    );
}

/// What decides whether the release pings (`should_flush`, patched in vendor/sqlx-postgres): a
/// connection whose statement was dropped after it was sent still has the answer to read, so
/// the release reads it (and closes the connection if it is an error) instead of handing it to
/// the connection's next statement, another request's.
#[tokio::test]
async fn a_connection_with_an_answer_still_to_read_is_not_at_rest() {
    use sqlx::Connection;
    let (_database, db, _observer) = one_connection_and_an_observer().await;

    let mut conn = db.acquire().await.expect("a connection");
    backend_pid(&mut conn).await;
    assert!(!conn.should_flush(), "at rest after an answered statement");

    // A statement that fails after a while, dropped once it has been sent (as when a request
    // times out or its client hangs up): its error is still on the wire. 2 s, so that a stalled
    // test thread cannot let the answer arrive before the 50 ms timeout fires.
    let failing =
        sqlx::query("SELECT 1 / (random() * 0)::int FROM pg_sleep(2)").execute(&mut *conn);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), failing)
            .await
            .is_err(),
        "the statement was still running when it was dropped"
    );
    assert!(
        conn.should_flush(),
        "a connection with an unread answer would go back to the pool without a ping"
    );
}
