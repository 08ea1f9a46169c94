//! TASKS_MAX_PER_USER: one more task than the cap is a 409 that names the limit; deleting one
//! makes room; concurrent creates cannot slip past it; the count is a few rows, not a count(*).

use std::borrow::Cow;

use futures::future::join_all;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::json;
use sqlx::migrate::Migrator;
use task_service::tasks::store::COUNT_ROWS_PER_USER;

use crate::helpers::{TestApp, User, assert_problem, fresh_database, spawn_on};

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

/// `n` creates of `user` at once, alternating between two replicas: their statuses.
async fn race_creates(one: &TestApp, two: &TestApp, user: &User, n: usize) -> Vec<u16> {
    join_all((0..n).map(|n| {
        let app = if n % 2 == 0 { one } else { two };
        async move {
            app.create(user, json!({"title": format!("racer {n}")}))
                .await
                .status()
                .as_u16()
        }
    }))
    .await
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
    let answers = race_creates(&one, &two, &user, 20).await;
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
    assert_eq!(one.tasks_held(&user).await, 5);
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

/// Each of the user's count rows: (shard, tasks, allowed, allowed_under).
async fn allowances(
    db: &sqlx::PgPool,
    user: uuid::Uuid,
) -> Vec<(i16, i32, Option<i32>, Option<i32>)> {
    sqlx::query_as(
        "SELECT shard, tasks, allowed, allowed_under FROM tasks.task_counts
         WHERE user_id = $1 ORDER BY shard",
    )
    .bind(user)
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn creates_within_their_allowances_leave_the_allowances_as_granted() {
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--tasks-max-per-user", "1000"]).await;
    let user = app.user();
    let db = app.db().await;
    app.task(&user, "first").await;
    // The first create found no allowance: it counted under the lock and granted the rest.
    let granted = allowances(&db, user.id).await;
    assert_eq!(granted.len(), COUNT_ROWS_PER_USER as usize);
    assert!(
        granted.iter().all(|&(_, tasks, allowed, under)| {
            under == Some(1000) && allowed.is_some_and(|allowed| allowed >= tasks)
        }),
        "{granted:?}"
    );
    let total: i32 = granted
        .iter()
        .map(|&(_, _, allowed, _)| allowed.unwrap())
        .sum();
    assert_eq!(total, 1000, "the allowances add up to the cap");

    for n in 0..20 {
        app.task(&user, &format!("within {n}")).await;
    }
    // No create went through the locked path again: that would have shared out what is left
    // anew. Each only added its task to its own row.
    let after = allowances(&db, user.id).await;
    let allowed = |rows: &[(i16, i32, Option<i32>, Option<i32>)]| {
        rows.iter()
            .map(|&(_, _, allowed, _)| allowed)
            .collect::<Vec<_>>()
    };
    assert_eq!(allowed(&after), allowed(&granted));
    let (kept, counted) = count_rows(&db, user.id).await;
    assert_eq!(kept, counted, "the count rows follow the creates");
    assert_eq!(kept.iter().map(|&(_, n)| n).sum::<i32>(), 21);
}

#[tokio::test]
async fn an_insert_made_in_sql_withdraws_the_allowances_and_the_cap_still_holds() {
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--tasks-max-per-user", "50"]).await;
    let user = app.user();
    let db = app.db().await;
    app.task(&user, "through the API").await;
    assert!(
        allowances(&db, user.id)
            .await
            .iter()
            .all(|row| row.2.is_some())
    );

    // An operator's insert (or release N−1's) is checked against no allowance.
    sqlx::query(
        "INSERT INTO tasks.tasks (user_id, title) SELECT $1, 'seeded ' || g FROM generate_series(1, 48) g",
    )
    .bind(user.id)
    .execute(&db)
    .await
    .unwrap();
    let withdrawn = allowances(&db, user.id).await;
    assert!(
        withdrawn
            .iter()
            .all(|row| row.2.is_none() && row.3.is_none()),
        "{withdrawn:?}"
    );

    // 49 held: one more fits, the next is refused, whatever the old allowances said.
    assert_eq!(
        app.create(&user, json!({"title": "the 50th"}))
            .await
            .status(),
        201
    );
    assert_problem(app.create(&user, json!({"title": "51st"})).await, 409).await;
    let (kept, counted) = count_rows(&db, user.id).await;
    assert_eq!(kept, counted, "the count rows follow every insert");
    assert_eq!(counted.iter().map(|&(_, n)| n).sum::<i32>(), 50);

    sqlx::query("DELETE FROM tasks.tasks WHERE user_id = $1 AND title LIKE 'seeded %'")
        .bind(user.id)
        .execute(&db)
        .await
        .unwrap();
    let (kept, counted) = count_rows(&db, user.id).await;
    assert_eq!(kept, counted, "and every delete, whoever runs it");
    assert_eq!(kept.iter().map(|&(_, n)| n).sum::<i32>(), 2);
}

#[tokio::test]
async fn a_lower_cap_holds_at_once_against_allowances_granted_under_a_higher_one() {
    let database = fresh_database().await;
    let before = spawn_on(&database, &["--tasks-max-per-user", "1000"]).await;
    let after = spawn_on(&database, &["--tasks-max-per-user", "7"]).await;
    let user = before.user();
    for n in 0..5 {
        before.task(&user, &format!("before {n}")).await;
    }
    // Every row still has room under the allowances granted for 1 000.
    let granted = allowances(&before.db().await, user.id).await;
    assert!(
        granted
            .iter()
            .all(|&(_, tasks, allowed, _)| allowed > Some(tasks))
    );

    let answers =
        join_all((0..4).map(|n| after.create(&user, json!({"title": format!("after {n}")}))))
            .await
            .into_iter()
            .map(|r| r.status().as_u16())
            .collect::<Vec<_>>();
    assert_eq!(
        answers.iter().filter(|&&s| s == 201).count(),
        2,
        "{answers:?}"
    );
    assert_eq!(after.tasks_held(&user).await, 7);
}

#[tokio::test]
async fn many_concurrent_creates_through_two_instances_stop_exactly_at_a_large_cap() {
    let _one_at_a_time = crate::helpers::with_many_connections().await;
    let database = fresh_database().await;
    let one = spawn_on(&database, &["--tasks-max-per-user", "200"]).await;
    let two = spawn_on(&database, &["--tasks-max-per-user", "200"]).await;
    let user = one.user();
    // Within allowances at first, then rows run out one by one and creates count under the
    // lock, granting smaller and smaller allowances, until none is left.
    let answers = race_creates(&one, &two, &user, 260).await;
    assert_eq!(
        answers.iter().filter(|&&s| s == 201).count(),
        200,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|&&s| s == 409).count(),
        60,
        "{answers:?}"
    );
    let db = one.db().await;
    let (kept, counted) = count_rows(&db, user.id).await;
    assert_eq!(kept, counted);
    assert_eq!(counted.iter().map(|&(_, n)| n).sum::<i32>(), 200);
}

/// Each user's count rows, as the triggers keep them and as counting the tasks gives them.
pub async fn count_rows(db: &sqlx::PgPool, user: uuid::Uuid) -> (Vec<(i16, i32)>, Vec<(i16, i32)>) {
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
    common::db::migrate(
        &direct,
        task_service::SCHEMA,
        &before_0005,
        common::db::MIGRATION_LOCK_TIMEOUT,
    )
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

    common::db::migrate(
        &direct,
        task_service::SCHEMA,
        &task_service::MIGRATOR,
        common::db::MIGRATION_LOCK_TIMEOUT,
    )
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

#[tokio::test]
async fn inserts_without_allowances_beside_creates_neither_deadlock_nor_let_creates_pass_the_cap() {
    let _one_at_a_time = crate::helpers::with_many_connections().await;
    let database = fresh_database().await;
    let one = spawn_on(&database, &["--tasks-max-per-user", "100"]).await;
    let two = spawn_on(&database, &["--tasks-max-per-user", "100"]).await;
    let user = one.user();
    let db = one.db().await;
    // Release N−1's pods during a rolling upgrade insert without allowances, as SQL does:
    // each withdraws the user's allowances while this release's creates grant them.
    let creates = race_creates(&one, &two, &user, 150);
    let unchecked = join_all((0..40).map(|n| {
        sqlx::query("INSERT INTO tasks.tasks (user_id, title) VALUES ($1, $2)")
            .bind(user.id)
            .bind(format!("unchecked {n}"))
            .execute(&db)
    }));
    let (answers, inserted) = tokio::join!(creates, unchecked);
    assert!(
        inserted.iter().all(Result::is_ok),
        "no insert was chosen as a deadlock's victim: {inserted:?}"
    );
    assert!(
        answers.iter().all(|&s| s == 201 || s == 409),
        "every create was created or refused at the cap: {answers:?}"
    );
    let created = answers.iter().filter(|&&s| s == 201).count() as i64;
    assert!(created <= 100, "{answers:?}");
    let held = one.tasks_held(&user).await;
    assert_eq!(held, created + 40);
    // A create is refused only when the user holds the cap, and nothing here deletes.
    assert!(
        held >= 100,
        "refused below the cap: {held} held, {answers:?}"
    );
    let (kept, counted) = count_rows(&db, user.id).await;
    assert_eq!(kept, counted);
}

/// The counts cannot drift through the two writes the insert and delete triggers do not see
/// (migration 0008): moving a task to another user or id is refused, and a TRUNCATE empties the
/// counts with the tasks, so the cap neither stays spent nor lets a user past it.
#[tokio::test]
async fn a_task_cannot_change_owner_and_a_truncate_empties_the_counts() {
    let app = crate::helpers::spawn_app_with(&["--tasks-max-per-user", "2"]).await;
    let (user, other) = (app.user(), app.user());
    let id = app.task(&user, "first").await["id"].as_i64().unwrap();
    app.task(&user, "second").await;
    assert_eq!(
        app.create(&user, json!({"title": "third"})).await.status(),
        409
    );
    let db = app.db().await;
    for change in [
        "UPDATE tasks.tasks SET user_id = $2 WHERE id = $1",
        "UPDATE tasks.tasks SET id = DEFAULT WHERE id = $1 AND $2::uuid IS NOT NULL",
    ] {
        let refused = sqlx::query(change)
            .bind(id)
            .bind(other.id)
            .execute(&db)
            .await
            .unwrap_err();
        let code = refused.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("23514"), "{change}: {refused}");
    }
    // Other columns still change as before.
    sqlx::query("UPDATE tasks.tasks SET title = 'renamed in SQL' WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await
        .unwrap();

    sqlx::query("TRUNCATE tasks.tasks")
        .execute(&db)
        .await
        .unwrap();
    let (kept, counted) = count_rows(&db, user.id).await;
    assert!(kept.is_empty() && counted.is_empty(), "{kept:?}");
    for title in ["again 1", "again 2"] {
        assert_eq!(
            app.create(&user, json!({"title": title})).await.status(),
            201
        );
    }
    assert_eq!(
        app.create(&user, json!({"title": "again 3"}))
            .await
            .status(),
        409
    );
}
