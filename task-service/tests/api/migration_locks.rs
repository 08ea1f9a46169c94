//! Migrations and the locks they wait for (`common::db::migrate`): a migration that waits for a
//! table lock another session holds gives up after `MIGRATION_LOCK_TIMEOUT_MS`, having changed
//! nothing, so that the API's statements queued behind it run again; the migrator's advisory
//! lock, which replicas starting together take in turn, is waited for without that bound.

use std::borrow::Cow;
use std::time::Duration;

use secrecy::SecretString;
use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::helpers::{eventually, fresh_database};

const HANG_GUARD: Duration = Duration::from_secs(30);
const LOCK_TIMEOUT: Duration = Duration::from_millis(300);

/// task-service's migrations and one more that needs the tasks table to itself.
fn with_a_table_rewrite() -> Migrator {
    let mut migrations = task_service::MIGRATOR.migrations.to_vec();
    migrations.push(Migration::new(
        9_999,
        Cow::Borrowed("needs the tasks table to itself"),
        MigrationType::Simple,
        Cow::Borrowed("ALTER TABLE tasks.tasks ADD COLUMN lock_probe integer"),
        false,
    ));
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// The sessions of this database waiting on a lock of `kind` (`pg_stat_activity.wait_event`).
async fn waiting_on(observer: &PgPool, kind: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = $1",
    )
    .bind(kind)
    .fetch_one(observer)
    .await
    .unwrap()
}

/// Waits (up to `HANG_GUARD`) until exactly one session of this database waits on a lock of
/// `kind`; whether it came to that.
async fn one_session_comes_to_wait_on(observer: &PgPool, kind: &'static str) -> bool {
    eventually(HANG_GUARD, || {
        let observer = observer.clone();
        async move { waiting_on(&observer, kind).await == 1 }
    })
    .await
}

async fn column_exists(observer: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM information_schema.columns
         WHERE table_schema = 'tasks' AND table_name = 'tasks' AND column_name = 'lock_probe')",
    )
    .fetch_one(observer)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_migration_waiting_for_a_table_lock_gives_up_and_the_statements_behind_it_run() {
    let database = fresh_database().await;
    let url = database.direct_url();
    let direct = SecretString::from(url.clone());
    let observer = common::postgres::pool(&url).await.unwrap();
    // A session in the way: an open transaction that has read the table (a report, a `BEGIN`
    // left open in psql) holds its lock until it ends.
    let mut holder = PgConnection::connect(&url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("SELECT count(*) FROM tasks.tasks")
        .await
        .unwrap();

    let migrating = tokio::spawn({
        let direct = direct.clone();
        async move {
            let migrator = with_a_table_rewrite();
            common::db::migrate(&direct, task_service::SCHEMA, &migrator, LOCK_TIMEOUT).await
        }
    });
    assert!(
        one_session_comes_to_wait_on(&observer, "relation").await,
        "the migration waits for the table lock"
    );
    // An API read now queues behind the waiting migration, and ends only once it has given up:
    // the holder keeps its lock throughout.
    let mut reader = PgConnection::connect(&url).await.unwrap();
    let read = tokio::time::timeout(
        HANG_GUARD,
        reader.execute("SELECT count(*) FROM tasks.tasks"),
    )
    .await;
    assert!(
        read.is_ok_and(|done| done.is_ok()),
        "the read behind the migration ran while the lock was still held"
    );

    let error = tokio::time::timeout(HANG_GUARD, migrating)
        .await
        .expect("the migration ends")
        .unwrap()
        .expect_err("the migration gives up");
    let said = format!("{error:#}");
    assert!(
        said.contains("migration 9999 waited 300 ms (MIGRATION_LOCK_TIMEOUT_MS)")
            && said.contains("nothing of it was applied"),
        "{said}"
    );
    assert!(!column_exists(&observer).await, "nothing was changed");
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks._sqlx_migrations WHERE version = 9999")
            .fetch_one(&observer)
            .await
            .unwrap();
    assert_eq!(
        recorded, 0,
        "not recorded, not even as failed: it can run again"
    );

    holder.execute("ROLLBACK").await.unwrap();
    common::db::migrate(
        &direct,
        task_service::SCHEMA,
        &with_a_table_rewrite(),
        LOCK_TIMEOUT,
    )
    .await
    .expect("with the session gone, the migration applies");
    assert!(column_exists(&observer).await);
}

#[tokio::test]
async fn replicas_migrating_together_wait_for_each_other_beyond_the_lock_timeout() {
    let database = fresh_database().await;
    let url = database.direct_url();
    let direct = SecretString::from(url.clone());
    let observer = common::postgres::pool(&url).await.unwrap();
    // Another replica's migrator, holding the advisory lock while it applies its migrations.
    let mut other_replica = PgConnection::connect(&url).await.unwrap();
    other_replica.lock().await.unwrap();

    let migrating = tokio::spawn(async move {
        common::db::migrate(
            &direct,
            task_service::SCHEMA,
            &task_service::MIGRATOR,
            LOCK_TIMEOUT,
        )
        .await
    });
    assert!(
        one_session_comes_to_wait_on(&observer, "advisory").await,
        "the second migrator waits for the first"
    );
    // Ten lock timeouts later it still waits: the bound is not applied to this lock.
    tokio::time::sleep(10 * LOCK_TIMEOUT).await;
    assert!(!migrating.is_finished(), "still waiting, not failed");
    assert_eq!(waiting_on(&observer, "advisory").await, 1);

    other_replica.unlock().await.unwrap();
    tokio::time::timeout(HANG_GUARD, migrating)
        .await
        .expect("it goes on once the lock is free")
        .unwrap()
        .expect("nothing left to apply");
}
