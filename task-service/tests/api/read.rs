use std::sync::Arc;
use std::time::Duration;

use common::test_metrics::{sample, scrape};
use serde_json::Value;

use crate::helpers::{
    self, User, assert_problem, lock_the_table, spawn_app, spawn_on,
    statements_waiting_on_the_table,
};

#[tokio::test]
async fn get_returns_the_owners_task() {
    let app = spawn_app().await;
    let user = app.user();
    let task = app.task(&user, "Read me").await;
    let response = app
        .get(&user, &format!("/api/v1/tasks/{}", task["id"]))
        .await;
    assert_eq!(response.status(), 200);
    let got: Value = response.json().await.unwrap();
    assert_eq!(got, task);
}

#[tokio::test]
async fn another_users_task_is_404_like_a_missing_one() {
    let app = spawn_app().await;
    let owner = app.user();
    let other = app.user();
    let task = app.task(&owner, "Private").await;
    let theirs = assert_problem(
        app.get(&other, &format!("/api/v1/tasks/{}", task["id"]))
            .await,
        404,
    )
    .await;
    let missing = assert_problem(app.get(&other, "/api/v1/tasks/999999999").await, 404).await;
    assert_eq!(
        theirs, missing,
        "a 404 does not reveal that the task exists"
    );
}

#[tokio::test]
async fn a_malformed_id_is_422_never_500() {
    let app = spawn_app().await;
    let user = app.user();
    for id in ["abc", "1.5", "99999999999999999999999", "%00"] {
        assert_problem(app.get(&user, &format!("/api/v1/tasks/{id}")).await, 422).await;
    }
    assert_problem(app.get(&user, "/api/v1/tasks/-1").await, 404).await;
}

#[tokio::test]
async fn reads_queued_behind_a_running_one_share_a_statement_and_each_get_their_own_answer() {
    let database_url = helpers::fresh_database().await;
    let app = spawn_on(&database_url, &["--read-coalescing-in-flight", "1"]).await;
    let (alice, bob) = (app.user(), app.user());
    let alices = [app.task(&alice, "a1").await, app.task(&alice, "a2").await];
    let bobs = app.task(&bob, "b1").await;

    // The first read holds the only statement slot, stuck behind a lock on the table, so
    // every later read queues for the next statement.
    let db = app.db().await;
    let lock = lock_the_table(&db).await;
    let app = Arc::new(app);
    let alice = Arc::new(alice);
    let bob = Arc::new(bob);
    // (reader, path, the task expected, or None for a 404)
    let mut cases: Vec<(Arc<User>, String, Option<Value>)> = Vec::new();
    for round in 0..10 {
        let alices_task = &alices[round % 2];
        cases.push((
            alice.clone(),
            path_of(alices_task),
            Some(alices_task.clone()),
        ));
        cases.push((bob.clone(), path_of(&bobs), Some(bobs.clone())));
        cases.push((bob.clone(), path_of(alices_task), None));
        cases.push((alice.clone(), path_of(&bobs), None));
        cases.push((alice.clone(), "/api/v1/tasks/999999999".into(), None));
    }
    let reads: Vec<_> = cases
        .into_iter()
        .map(|(user, path, expected)| {
            let app = app.clone();
            tokio::spawn(async move { (app.get(&user, &path).await, expected) })
        })
        .collect();
    // The first statement waits on the lock, and the 49 other reads wait in the queue, before
    // the lock goes: a fixed pause could end before a slow machine had queued them all.
    helpers::wait_for_statements_waiting_on_the_table(&db, 1).await;
    app.wait_for_queue_depth("task_read_queue_depth", 49).await;
    lock.rollback().await.unwrap();

    for read in reads {
        let (response, expected) = read.await.unwrap();
        match expected {
            Some(task) => {
                assert_eq!(response.status(), 200);
                assert_eq!(response.json::<Value>().await.unwrap(), task);
            }
            None => {
                assert_problem(response, 404).await;
            }
        }
    }
    let metrics = scrape(&app.client, &app.admin).await;
    let statements = sample(&metrics, "task_read_batch_size_count");
    let reads = sample(&metrics, "task_read_batch_size_sum");
    assert_eq!(reads, 50.0, "every read went through a statement once");
    assert_eq!(
        statements, 2.0,
        "the stalled read's statement, and one for the 49 queued behind it"
    );
}

#[tokio::test]
async fn a_stalled_statement_holds_up_later_reads_only_until_a_second_one_starts() {
    let database_url = helpers::fresh_database().await;
    let app = Arc::new(spawn_on(&database_url, &["--read-coalescing-in-flight", "2"]).await);
    let user = Arc::new(app.user());
    let task = app.task(&user, "behind a lock").await;
    let path = format!("/api/v1/tasks/{}", task["id"]);
    let db = app.db().await;
    let lock = lock_the_table(&db).await;
    let read = |n: usize| {
        let (app, user, path) = (app.clone(), user.clone(), path.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * n as u64)).await;
            app.get(&user, &path).await
        })
    };
    let reads: Vec<_> = (0..10).map(read).collect();
    // The first read's statement stalls on the lock; the reads after it wait for it, then
    // (it being stalled) take the second slot: two statements wait, never a third.
    // (Were every read held up by the stalled statement, no second would start: this fails.)
    helpers::wait_for_statements_waiting_on_the_table(&db, 2).await;
    // The other 8 reads wait in the queue before the lock goes: the batches are then decided
    // by the stall rule alone, not by when a late read happened to arrive. A wrongly started
    // third statement would have taken them from the queue.
    app.wait_for_queue_depth("task_read_queue_depth", 8).await;
    assert_eq!(statements_waiting_on_the_table(&db).await, 2);
    lock.rollback().await.unwrap();
    for read in reads {
        let response = read.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap(), task);
    }
    let metrics = scrape(&app.client, &app.admin).await;
    assert_eq!(sample(&metrics, "task_read_batch_size_sum"), 10.0);
    assert_eq!(
        sample(&metrics, "task_read_batch_size_count"),
        3.0,
        "the stalled statement, the second slot's, and one for the reads queued behind both"
    );
}

#[tokio::test]
async fn reads_without_coalescing_answer_the_same() {
    let database = helpers::fresh_database().await;
    let app = spawn_on(&database, &["--read-coalescing-in-flight", "0"]).await;
    let (owner, other) = (app.user(), app.user());
    let task = app.task(&owner, "Direct").await;
    let response = app.get(&owner, &path_of(&task)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), task);
    assert_problem(app.get(&other, &path_of(&task)).await, 404).await;
}

fn path_of(task: &Value) -> String {
    format!("/api/v1/tasks/{}", task["id"])
}
