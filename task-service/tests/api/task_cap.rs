//! TASKS_MAX_PER_USER: one more task than the cap is a 409 that names the limit; deleting one
//! makes room; concurrent creates cannot slip past it; the count is a few rows, not a count(*).

use std::borrow::Cow;

use futures::future::join_all;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::json;
use sqlx::migrate::Migrator;
use task_service::tasks::store::COUNT_ROWS_PER_USER;

use crate::helpers::{assert_problem, fresh_database, spawn_on};

#[tokio::test]
async fn one_task_past_the_cap_is_409_and_a_delete_makes_room() {
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--tasks-max-per-user", "3"]).await;
    let user = app.user();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(app.task(&user, &format!("task {n}")).await["id"].clone());
    }
    let refused = app.create(&user, json!({"title": "one too many"})).await;
    let body = assert_problem(refused, 409).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains('3') && detail.contains("TASKS_MAX_PER_USER"),
        "{detail}"
    );
    // Another user is not affected.
    assert_eq!(
        app.create(&app.user(), json!({"title": "mine"}))
            .await
            .status(),
        201
    );

    let deleted = app
        .send(
            &user,
            Method::DELETE,
            &format!("/api/v1/tasks/{}", ids[0]),
            json!({}),
        )
        .await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        app.create(&user, json!({"title": "room again"}))
            .await
            .status(),
        201
    );
    assert_problem(app.create(&user, json!({"title": "full again"})).await, 409).await;

    let count: i64 =
        sqlx::query_scalar("SELECT sum(tasks) FROM tasks.task_counts WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(&app.db().await)
            .await
            .unwrap();
    assert_eq!(count, 3, "the counter row follows inserts and deletes");
}

#[tokio::test]
async fn concurrent_creates_cannot_slip_past_the_cap() {
    let database = fresh_database().await;
    let one = spawn_on(&database, &["--tasks-max-per-user", "5"]).await;
    let two = spawn_on(&database, &["--tasks-max-per-user", "5"]).await;
    let user = one.user();
    assert_eq!(
        one.create(&user, json!({"title": "first"})).await.status(),
        201
    );
    let answers = join_all((0..20).map(|n| {
        let app = if n % 2 == 0 { &one } else { &two };
        let user = &user;
        async move {
            app.create(user, json!({"title": format!("racer {n}")}))
                .await
                .status()
                .as_u16()
        }
    }))
    .await;
    assert_eq!(
        answers.iter().filter(|&&s| s == 201).count(),
        4,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|&&s| s == 409).count(),
        16,
        "{answers:?}"
    );
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks.tasks WHERE user_id = $1")
        .bind(user.id)
        .fetch_one(&one.db().await)
        .await
        .unwrap();
    assert_eq!(held, 5);
}

#[tokio::test]
async fn an_idempotent_create_at_the_cap_records_nothing() {
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--tasks-max-per-user", "1"]).await;
    let user = app.user();
    let only = app.task(&user, "only").await;
    let full = app
        .send_with(
            &user,
            Method::POST,
            "/api/v1/tasks",
            Some(json!({"title": "later"})),
            &[("idempotency-key", "k1")],
        )
        .await;
    assert_problem(full, 409).await;
    app.send(
        &user,
        Method::DELETE,
        &format!("/api/v1/tasks/{}", only["id"]),
        json!({}),
    )
    .await;
    // The refused attempt left no record: the retry creates the task.
    let retry = app
        .send_with(
            &user,
            Method::POST,
            "/api/v1/tasks",
            Some(json!({"title": "later"})),
            &[("idempotency-key", "k1")],
        )
        .await;
    assert_eq!(retry.status(), 201);
    assert!(retry.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn a_retry_of_the_create_that_reached_the_cap_replays_its_answer() {
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--tasks-max-per-user", "1"]).await;
    let user = app.user();
    let keyed = |title: &'static str| {
        app.send_with(
            &user,
            Method::POST,
            "/api/v1/tasks",
            Some(json!({ "title": title })),
            &[("idempotency-key", "fills-the-cap")],
        )
    };
    let first = keyed("the last one").await;
    assert_eq!(first.status(), 201);
    let first_etag = first.headers()["etag"].clone();
    let first: serde_json::Value = first.json().await.unwrap();

    // The user is at the cap now; the client's retry still gets the first answer, not a 409.
    let retry = keyed("the last one").await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["etag"], first_etag);
    let retried: serde_json::Value = retry.json().await.unwrap();
    assert_eq!(retried["id"], first["id"]);

    // The same key with another body is still the key's misuse (422), not the cap (409).
    assert_problem(keyed("another body").await, 422).await;
    let listed: Vec<serde_json::Value> =
        app.get(&user, "/api/v1/tasks").await.json().await.unwrap();
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn a_large_cap_is_counted_without_a_lock_far_from_it_and_exactly_near_it() {
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--tasks-max-per-user", "1500"]).await;
    let user = app.user();
    let db = app.db().await;
    let seed = |n: i32| {
        sqlx::query(
            "INSERT INTO tasks.tasks (user_id, title) SELECT $1, 'seeded ' || g FROM generate_series(1, $2) g",
        )
        .bind(user.id)
        .bind(n)
    };
    // Far from the cap (200 of 1500): the unlocked path.
    seed(200).execute(&db).await.unwrap();
    assert_eq!(
        app.create(&user, json!({"title": "far"})).await.status(),
        201
    );
    // Right below it: the locked path lets exactly the last one through.
    seed(1298).execute(&db).await.unwrap();
    let answers =
        join_all((0..6).map(|n| app.create(&user, json!({"title": format!("near {n}")}))))
            .await
            .into_iter()
            .map(|r| r.status().as_u16())
            .collect::<Vec<_>>();
    assert_eq!(
        answers.iter().filter(|&&s| s == 201).count(),
        1,
        "{answers:?}"
    );
    let (counted, held): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(tasks) FROM tasks.task_counts WHERE user_id = $1),
                (SELECT count(*) FROM tasks.tasks WHERE user_id = $1)",
    )
    .bind(user.id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (counted, held),
        (1500, 1500),
        "the count rows follow every insert"
    );
    sqlx::query("DELETE FROM tasks.tasks WHERE user_id = $1 AND title LIKE 'seeded %'")
        .bind(user.id)
        .execute(&db)
        .await
        .unwrap();
    let counted: i64 =
        sqlx::query_scalar("SELECT sum(tasks) FROM tasks.task_counts WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(counted, 2, "and every delete, whoever runs it");
}

/// Each user's count rows, as the triggers keep them and as counting the tasks gives them.
async fn count_rows(db: &sqlx::PgPool, user: uuid::Uuid) -> (Vec<(i16, i32)>, Vec<(i16, i32)>) {
    let kept = sqlx::query_as(
        "SELECT shard, tasks FROM tasks.task_counts WHERE user_id = $1 AND tasks > 0 ORDER BY shard",
    )
    .bind(user)
    .fetch_all(db)
    .await
    .unwrap();
    let counted = sqlx::query_as(
        "SELECT (id % $2)::smallint, count(*)::int FROM tasks.tasks WHERE user_id = $1
         GROUP BY 1 ORDER BY 1",
    )
    .bind(user)
    .bind(i64::from(COUNT_ROWS_PER_USER))
    .fetch_all(db)
    .await
    .unwrap();
    (kept, counted)
}

#[tokio::test]
async fn counts_kept_in_16_rows_are_recounted_into_64_by_migration_0005() {
    let server = common::postgres::server().await.unwrap();
    let database = server.fresh_database(&[]).await.unwrap();
    let direct_url = database.direct_url();
    let direct = SecretString::from(direct_url.clone());
    let before_0005 = Migrator {
        migrations: Cow::Owned(
            task_service::MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < 5)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    common::db::migrate(&direct, task_service::SCHEMA, &before_0005)
        .await
        .unwrap();
    let db = common::postgres::pool(&direct_url).await.unwrap();
    let (heavy, light) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let seed = |user: uuid::Uuid, n: i32| {
        sqlx::query(
            "INSERT INTO tasks.tasks (user_id, title) SELECT $1, 'seeded ' || g FROM generate_series(1, $2) g",
        )
        .bind(user)
        .bind(n)
    };
    // Deletes every heavy task whose id is a multiple of `n`: some from each count row.
    let thin_out = |n: i64| {
        sqlx::query("DELETE FROM tasks.tasks WHERE user_id = $1 AND id % $2 = 0")
            .bind(heavy)
            .bind(n)
    };
    seed(heavy, 300).execute(&db).await.unwrap();
    seed(light, 37).execute(&db).await.unwrap();
    thin_out(7).execute(&db).await.unwrap();
    let (kept, _) = count_rows(&db, heavy).await;
    assert_eq!(kept.len(), 16, "before 0005 a user's count is in 16 rows");

    common::db::migrate(&direct, task_service::SCHEMA, &task_service::MIGRATOR)
        .await
        .unwrap();
    let (kept, counted) = count_rows(&db, light).await;
    assert_eq!(kept, counted, "recounted by the migration");
    let (kept, counted) = count_rows(&db, heavy).await;
    assert_eq!(kept, counted, "recounted by the migration");
    assert_eq!(
        kept.len(),
        COUNT_ROWS_PER_USER as usize,
        "the heavy user's tasks, with neighbouring ids, fill every row"
    );

    // The triggers keep the new rows from then on, inserts and deletes alike.
    seed(heavy, 100).execute(&db).await.unwrap();
    thin_out(5).execute(&db).await.unwrap();
    let (kept, counted) = count_rows(&db, heavy).await;
    assert_eq!(kept, counted, "kept by the triggers after the migration");
}
