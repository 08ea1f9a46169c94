//! Creates coalesced into shared statements (`tasks::creator`): each create gets its own task,
//! the cap holds inside a batch, batches of many users never deadlock, and a create whose
//! request gave up before its statement ran is not inserted.

use std::sync::Arc;
use std::time::Duration;

use common::test_metrics::{sample, scrape};
use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{self, TestApp, User, lock_the_table, spawn_on};
use crate::task_cap::count_rows;

/// task-service on a database of its own with one create statement at a time (the next batch
/// queues behind the one running), and `extra` settings.
async fn with_one_statement_slot(extra: &[&str]) -> Arc<TestApp> {
    let args = [&["--create-coalescing-in-flight", "1"], extra].concat();
    Arc::new(helpers::spawn_app_with(&args).await)
}

/// Statements the creator ran, and the creates they carried.
async fn batches(app: &TestApp) -> (f64, f64) {
    let metrics = scrape(&app.client, &app.admin).await;
    (
        sample(&metrics, "task_create_batch_size_count"),
        sample(&metrics, "task_create_batch_size_sum"),
    )
}

#[tokio::test]
async fn creates_queued_behind_a_running_one_share_a_statement_and_each_get_their_own_task() {
    let app = with_one_statement_slot(&[]).await;
    let (alice, bob) = (Arc::new(app.user()), Arc::new(app.user()));
    // A user's first create counts under a lock and grants allowances; every later one fits
    // within them, so the batch's own statement inserts it (none goes on alone).
    app.task(&alice, "first").await;
    app.task(&bob, "first").await;
    let (statements_before, carried_before) = batches(&app).await;
    // The first create holds the only statement slot, stuck behind a lock on the table, so
    // the later ones queue for the next statement.
    let db = app.db().await;
    let lock = lock_the_table(&db).await;
    let creates: Vec<_> = (0..20)
        .map(|n| {
            let (app, user) = (
                app.clone(),
                if n % 3 == 0 {
                    bob.clone()
                } else {
                    alice.clone()
                },
            );
            // Some with a description, some without, some with it null.
            let body = match n % 4 {
                0 => json!({"title": format!("task {n}")}),
                1 => json!({"title": format!("task {n}"), "description": null}),
                _ => json!({"title": format!("task {n}"), "description": format!("about {n}")}),
            };
            tokio::spawn(async move {
                let response = app.create(&user, body.clone()).await;
                (user, body, response)
            })
        })
        .collect();
    // The first create's statement waits on the lock and the 19 others in the queue, each past
    // its last step into it (its token check, its body), before the lock goes.
    app.wait_for_queue_depth("task_create_queue_depth", 19)
        .await;
    lock.rollback().await.unwrap();

    let mut ids = Vec::new();
    for create in creates {
        let (user, sent, response) = create.await.unwrap();
        assert_eq!(response.status(), 201);
        let task: Value = response.json().await.unwrap();
        assert_eq!(task["user_id"], user.id.to_string());
        assert_eq!(task["title"], sent["title"]);
        assert_eq!(
            task["description"],
            sent.get("description").cloned().unwrap_or(Value::Null)
        );
        assert_eq!(task["completed"], false);
        // What was answered is what was stored, under the caller's own id.
        let path = format!("/api/v1/tasks/{}", task["id"]);
        assert_eq!(
            app.get(&user, &path).await.json::<Value>().await.unwrap(),
            task
        );
        ids.push(task["id"].as_i64().unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every create got a task of its own");
    assert_eq!(app.tasks_held(&alice).await, 14);
    assert_eq!(app.tasks_held(&bob).await, 8);
    // A statement's rows share its transaction's `now()`: two statements inserted all 20 (a
    // create that went on alone would have a transaction, and a timestamp, of its own).
    let statements_that_inserted: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT created_at) FROM tasks.tasks WHERE title LIKE 'task %'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(
        statements_that_inserted <= 2,
        "the 20 creates were inserted by {statements_that_inserted} statements"
    );
    for user in [&alice, &bob] {
        let (kept, counted) = count_rows(&db, user.id).await;
        assert_eq!(kept, counted, "the count rows follow a batch's inserts");
    }
    let (statements, carried) = batches(&app).await;
    let (statements, carried) = (statements - statements_before, carried - carried_before);
    assert_eq!(carried, 20.0, "every create went through a statement once");
    assert!(
        statements <= 2.0,
        "20 creates queued behind one took {statements} statements"
    );
}

#[tokio::test]
async fn the_cap_holds_inside_a_batch() {
    let app = with_one_statement_slot(&["--tasks-max-per-user", "5"]).await;
    let (busy, other) = (Arc::new(app.user()), Arc::new(app.user()));
    // Allowances granted: the batch's rows land within them or fall back to counting.
    app.task(&busy, "first").await;
    let db = app.db().await;
    let lock = lock_the_table(&db).await;
    let creates: Vec<_> = (0..15)
        .map(|n| {
            let (app, user) = (
                app.clone(),
                if n < 12 { busy.clone() } else { other.clone() },
            );
            tokio::spawn(async move {
                let status = app
                    .create(&user, json!({"title": format!("racer {n}")}))
                    .await
                    .status();
                (n < 12, status.as_u16())
            })
        })
        .collect();
    app.wait_for_requests_in_flight(15).await;
    lock.rollback().await.unwrap();
    let answers: Vec<(bool, u16)> = join_all(creates)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let busy_created = answers
        .iter()
        .filter(|&&(busy, status)| busy && status == 201)
        .count();
    let busy_refused = answers
        .iter()
        .filter(|&&(busy, status)| busy && status == 409)
        .count();
    assert_eq!((busy_created, busy_refused), (4, 8), "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(busy, _)| !busy)
            .all(|&(_, status)| status == 201),
        "{answers:?}"
    );
    assert_eq!(app.tasks_held(&busy).await, 5);
    assert_eq!(app.tasks_held(&other).await, 3);
    let (kept, counted) = count_rows(&db, busy.id).await;
    assert_eq!(kept, counted);
}

#[tokio::test]
async fn batches_of_many_users_through_two_instances_neither_deadlock_nor_miscount() {
    let _one_at_a_time = crate::helpers::with_many_connections().await;
    let database = helpers::fresh_database().await;
    let one = spawn_on(&database, &["--create-coalescing-in-flight", "4"]).await;
    let two = spawn_on(&database, &["--create-coalescing-in-flight", "4"]).await;
    let users: Vec<User> = (0..6).map(|_| one.user()).collect();
    // Allowances granted, so that the race's creates are inserted by batches, not counted.
    for user in &users {
        one.task(user, "first").await;
    }
    // Each batch's rows touch several users' count rows; batches in both instances take them
    // at once. A lock order that differed between two batches would show as a deadlock (a 503).
    let answers = join_all((0..360).map(|n| {
        let app = if n % 2 == 0 { &one } else { &two };
        let user = &users[n % users.len()];
        async move {
            app.create(user, json!({"title": format!("many {n}")}))
                .await
                .status()
                .as_u16()
        }
    }))
    .await;
    assert!(answers.iter().all(|&status| status == 201), "{answers:?}");
    let db = one.db().await;
    for user in &users {
        assert_eq!(one.tasks_held(user).await, 61);
        let (kept, counted) = count_rows(&db, user.id).await;
        assert_eq!(kept, counted);
    }
    let ((statements_one, carried_one), (statements_two, carried_two)) =
        (batches(&one).await, batches(&two).await);
    assert_eq!(
        carried_one + carried_two,
        366.0,
        "the race's creates and the 6 first ones"
    );
    assert!(
        statements_one + statements_two < 366.0,
        "no two creates shared a statement"
    );
}

#[tokio::test]
async fn a_create_whose_request_gave_up_before_its_statement_is_not_inserted() {
    let app = with_one_statement_slot(&["--request-timeout-ms", "2000"]).await;
    let user = Arc::new(app.user());
    // A user's first create counts under a lock and grants the allowances, in the request's
    // own task; the later ones are inserted within them by the batch's statement alone.
    app.task(&user, "before").await;
    let db = app.db().await;
    let lock = lock_the_table(&db).await;
    let create = |title: &'static str| {
        let (app, user) = (app.clone(), user.clone());
        tokio::spawn(async move { app.create(&user, json!({"title": title})).await.status() })
    };
    // The first holds the only slot behind the lock; the second queues behind it. Both
    // requests time out; the first's statement was already sent, the second's never was.
    let first = create("sent before the timeout");
    helpers::wait_for_statements_waiting_on_the_table(&db, 1).await;
    let second = create("still queued at the timeout");
    assert_eq!(first.await.unwrap(), 503);
    assert_eq!(second.await.unwrap(), 503);
    lock.rollback().await.unwrap();
    // The first statement commits once the lock goes (a write is never taken back halfway).
    let committed = helpers::eventually(Duration::from_secs(30), || async {
        app.tasks_held(&user).await >= 2
    });
    assert!(committed.await, "the sent create never committed");
    app.task(&user, "after").await;
    assert_eq!(
        helpers::titles(&db, &user).await,
        ["before", "sent before the timeout", "after"]
    );
    assert_eq!(
        batches(&app).await,
        (3.0, 3.0),
        "the abandoned create made no statement"
    );
}

#[tokio::test]
async fn creates_without_coalescing_answer_the_same() {
    let app = helpers::spawn_app_with(&["--create-coalescing-in-flight", "0"]).await;
    let user = app.user();
    let task = app.task(&user, "Direct").await;
    assert_eq!(task["title"], "Direct");
    assert_eq!(app.tasks_held(&user).await, 1);
    let metrics = scrape(&app.client, &app.admin).await;
    assert!(
        !metrics.contains("task_create_batch_size"),
        "no batcher runs"
    );
}
