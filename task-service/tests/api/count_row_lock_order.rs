//! Statements that lock several count rows take them in key order, `(user_id, shard)`, so that
//! no two of them wait for each other in a cycle: a batch of creates
//! (`store::create_many_within_allowance`), a delete of many tasks (the `count_deleted`
//! trigger, migration 0007), and the purge of deleted users' count rows (`purge::purge`). Each
//! test holds the count row first in that order and starts the statement: it must wait there
//! having locked none of the other count rows. Taken in any other order, some would be locked
//! already.

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, Transaction};
use task_service::tasks::fields::TaskTitle;
use task_service::tasks::store::{self, COUNT_ROWS_PER_USER, NewTaskRow};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{fresh_database, spawn_on, wait_for_lock_waits};
use crate::task_cap::count_rows;

/// `n` tasks of `user` inserted in SQL, with neighbouring ids: one in each of `n` count rows.
async fn insert_tasks(db: &PgPool, user: Uuid, n: i32) {
    sqlx::query(
        "INSERT INTO tasks.tasks (user_id, title) SELECT $1, 'task ' || g FROM generate_series(1, $2) g",
    )
    .bind(user)
    .bind(n)
    .execute(db)
    .await
    .unwrap();
}

/// Rewrites `user`'s count row of shard 0 in place: its newer version lies further on in the
/// table, so a scan of the table (what a hash join over a few count rows starts with, or a
/// sequential scan of a small table) meets shard 0 last.
async fn move_shard_zero_last(db: &PgPool, user: Uuid) {
    sqlx::query("UPDATE tasks.task_counts SET tasks = tasks WHERE user_id = $1 AND shard = 0")
        .bind(user)
        .execute(db)
        .await
        .unwrap();
}

/// Locks `user`'s count row of shard 0 until the transaction ends.
async fn hold_shard_zero(db: &PgPool, user: Uuid) -> Transaction<'static, Postgres> {
    let mut tx = db.begin().await.unwrap();
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM tasks.task_counts
         WHERE user_id = $1 AND shard = 0 FOR UPDATE) locked",
    )
    .bind(user)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(held, 1, "the user has a count row for shard 0");
    tx
}

/// Runs `statement` on a connection of its own and waits until it waits for a lock. The test
/// database is this test's own, so its only backend waiting for a lock is the statement's (by
/// database rather than by backend: through a pooler in transaction mode, a client's
/// statements may run on any of its server connections).
async fn start_and_wait_for_its_lock<F, R>(db: &PgPool, statement: F) -> JoinHandle<R::Output>
where
    F: FnOnce(PoolConnection<Postgres>) -> R,
    R: Future + Send + 'static,
    R::Output: Send + 'static,
{
    let conn = db.acquire().await.unwrap();
    let running = tokio::spawn(statement(conn));
    wait_for_lock_waits(db, 1).await;
    running
}

/// Shards of `user`'s count rows that no transaction holds now.
async fn shards_not_locked(db: &PgPool, user: Uuid) -> Vec<i16> {
    let mut tx = db.begin().await.unwrap();
    let free = sqlx::query_scalar(
        "SELECT shard FROM tasks.task_counts WHERE user_id = $1
         ORDER BY shard FOR UPDATE SKIP LOCKED",
    )
    .bind(user)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    free
}

/// Asserts that, while `statement` waits for shard 0 of `user`'s count rows, it holds none of
/// the user's other count rows.
async fn assert_holds_none_but_shard_zero(db: &PgPool, user: Uuid, statement: &str) {
    let others: Vec<i16> = (1..COUNT_ROWS_PER_USER as i16).collect();
    assert_eq!(
        shards_not_locked(db, user).await,
        others,
        "waiting for shard 0, {statement} holds none of the user's other count rows"
    );
}

#[tokio::test]
async fn a_delete_of_many_tasks_locks_their_count_rows_in_key_order() {
    let database = fresh_database().await;
    let db = common::postgres::pool(&database).await.unwrap();
    let user = Uuid::new_v4();
    insert_tasks(&db, user, COUNT_ROWS_PER_USER).await;
    move_shard_zero_last(&db, user).await;

    let held = hold_shard_zero(&db, user).await;
    let delete = start_and_wait_for_its_lock(&db, |mut conn| async move {
        sqlx::query("DELETE FROM tasks.tasks WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .await;
    assert_holds_none_but_shard_zero(&db, user, "the delete").await;

    held.commit().await.unwrap();
    assert_eq!(delete.await.unwrap().unwrap(), COUNT_ROWS_PER_USER as u64);
    let (kept, counted) = count_rows(&db, user).await;
    assert_eq!(kept, counted, "every count row went back to 0");
    assert!(counted.is_empty());
}

#[tokio::test]
async fn a_batch_of_creates_locks_its_count_rows_in_key_order() {
    const MAX: i32 = 1_000;
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--tasks-max-per-user", &MAX.to_string()]).await;
    let db = app.db().await;
    let user = app.user();
    // The first create counts under a lock and grants each of the user's 64 count rows an
    // allowance: the batch's rows then fit within them and lock their count rows one by one.
    app.task(&user, "first").await;
    // The batch's 8 ids are drawn in the order of its rows: shards 60, 61, 62, 63, 0, 1, 2, 3.
    sqlx::query("SELECT setval('tasks.tasks_id_seq', $1)")
        .bind(64 * 1_000 + 59_i64)
        .execute(&db)
        .await
        .unwrap();

    let held = hold_shard_zero(&db, user.id).await;
    let batch = start_and_wait_for_its_lock(&db, |mut conn| async move {
        let rows: Vec<NewTaskRow> = (0..8)
            .map(|n| NewTaskRow {
                user: user.id,
                title: TaskTitle::parse(format!("batched {n}")).unwrap(),
                description: None,
            })
            .collect();
        let rows: Vec<&NewTaskRow> = rows.iter().collect();
        store::create_many_within_allowance(&mut conn, &rows, MAX)
            .await
            .map(|created| {
                let mut shards: Vec<i64> = created.iter().map(|(_, t)| t.id % 64).collect();
                shards.sort_unstable();
                shards
            })
    })
    .await;
    // Shards 60–63 are drawn before it.
    assert_holds_none_but_shard_zero(&db, user.id, "the batch").await;

    held.commit().await.unwrap();
    assert_eq!(
        batch.await.unwrap().unwrap(),
        [0, 1, 2, 3, 60, 61, 62, 63],
        "every row of the batch was inserted within its allowance"
    );
    let (kept, counted) = count_rows(&db, user.id).await;
    assert_eq!(kept, counted);
}

#[tokio::test]
async fn the_purge_locks_a_deleted_users_count_rows_in_key_order() {
    let database = fresh_database().await;
    let db = common::postgres::pool(&database).await.unwrap();
    let user = Uuid::new_v4();
    // Count rows and no task: the purge's delete of the tasks (ordered by the trigger of the
    // delete test above) locks nothing, and its delete of the count rows meets the held row.
    sqlx::query(
        "INSERT INTO tasks.task_counts (user_id, shard, tasks)
         SELECT $1, shard, 0 FROM generate_series(0, $2 - 1) AS shard",
    )
    .bind(user)
    .bind(COUNT_ROWS_PER_USER)
    .execute(&db)
    .await
    .unwrap();
    move_shard_zero_last(&db, user).await;
    // Known to be one page, the table is read by a sequential scan, in the order of the heap
    // (autovacuum analyzes a table this small after its first 50 rows).
    sqlx::query("ANALYZE tasks.task_counts")
        .execute(&db)
        .await
        .unwrap();

    let service_db = common::db::Db::connect_lazy(
        &common::db::DatabaseArgs {
            database_url: secrecy::SecretString::from(database.url().to_owned()),
            database_max_connections: 1,
            database_acquire_timeout_ms: 30_000,
        },
        &prometheus::Registry::new(),
    )
    .unwrap();
    let held = hold_shard_zero(&db, user).await;
    let purge = start_and_wait_for_its_lock(&db, |_| async move {
        task_service::purge::purge(&service_db, &[user]).await
    })
    .await;
    assert_holds_none_but_shard_zero(&db, user, "the purge").await;

    held.commit().await.unwrap();
    assert_eq!(
        purge.await.unwrap().unwrap(),
        0,
        "no task was left to delete"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks.task_counts WHERE user_id = $1")
        .bind(user)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(left, 0, "the purge deleted every count row of the user");
}

/// A create with an idempotency key runs in a transaction. Its attempt within the allowance of
/// the count row its task lands in may wait for that row and then find its allowance gone; the
/// UPDATE keeps the row locked all the same. Kept into the count under a lock (which locks the
/// user's rows from shard 0 up), that row would be taken out of order: here a statement that
/// locks the rows in order holds shards 0–9 and waits for shard 10, and the two deadlocked. The
/// attempt runs in a savepoint that is rolled back, so the row is let go before the count.
#[tokio::test]
async fn a_keyed_create_lets_go_of_a_count_row_without_allowance_before_it_counts() {
    const SHARD: i64 = 10;
    let database = fresh_database().await;
    let app = spawn_on(&database, &[]).await;
    let db = app.db().await;
    let user = app.user();
    // The first create counts under the lock and grants every count row an allowance.
    app.task(&user, "grants allowances").await;
    // The next id lands in shard 10.
    sqlx::query("SELECT setval('tasks.tasks_id_seq', (SELECT max(id) FROM tasks.tasks) / 64 * 64 + 64 + $1 - 1)")
        .bind(SHARD)
        .execute(&db)
        .await
        .unwrap();

    // Shard 10's allowance is being taken away; the keyed create waits for that row.
    let mut taking = db.begin().await.unwrap();
    sqlx::query("UPDATE tasks.task_counts SET allowed = tasks WHERE user_id = $1 AND shard = $2")
        .bind(user.id)
        .bind(SHARD as i16)
        .execute(&mut *taking)
        .await
        .unwrap();
    let create = tokio::spawn(
        app.client
            .post(app.url("/api/v1/tasks"))
            .bearer_auth(&user.token)
            .header("idempotency-key", "lets-go-first")
            .json(&serde_json::json!({"title": "keyed"}))
            .send(),
    );
    wait_for_lock_waits(&db, 1).await;
    // A statement that locks the user's count rows in order: shards 0–9, then it waits too.
    let ordered = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await?;
            let locked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT 1 FROM tasks.task_counts
                 WHERE user_id = $1 ORDER BY shard FOR UPDATE) locked",
            )
            .bind(user.id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(locked)
        }
    });
    wait_for_lock_waits(&db, 2).await;

    // The create gets shard 10 first and finds no allowance there.
    taking.commit().await.unwrap();
    let locked = ordered.await.unwrap();
    assert_eq!(
        locked.expect("the ordered lock is not chosen as a deadlock victim"),
        i64::from(COUNT_ROWS_PER_USER)
    );
    let created = create.await.unwrap().unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let (kept, counted) = count_rows(&db, user.id).await;
    assert_eq!(kept, counted);
}
