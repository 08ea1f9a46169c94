use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn put_changes_only_the_fields_sent() {
    let app = spawn_app().await;
    let user = app.user();
    let task: Value = app
        .create(&user, json!({"title": "Old", "description": "keep me"}))
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/v1/tasks/{}", task["id"]);
    let updated: Value = app
        .send(&user, Method::PUT, &path, json!({"title": "New"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(updated["title"], "New");
    assert_eq!(updated["description"], "keep me");
    assert_eq!(updated["completed"], false);
    // A new title is a change: updated_at moves (RFC 3339 with microseconds sorts as text).
    assert!(updated["updated_at"].as_str().unwrap() > task["updated_at"].as_str().unwrap());

    let updated: Value = app
        .send(&user, Method::PUT, &path, json!({"completed": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(updated["completed"], true);
    assert_eq!(updated["title"], "New");

    let cleared: Value = app
        .send(&user, Method::PUT, &path, json!({"description": null}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["title"], "New");

    let unchanged: Value = app
        .send(&user, Method::PUT, &path, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["title"], "New");
    assert_eq!(unchanged["completed"], true);
}

#[tokio::test]
async fn null_title_or_completed_and_invalid_values_are_422() {
    let app = spawn_app().await;
    let user = app.user();
    let task = app.task(&user, "Stay").await;
    let path = format!("/api/v1/tasks/{}", task["id"]);
    for body in [
        json!({"title": null}),
        json!({"completed": null}),
        json!({"title": ""}),
        json!({"title": "x".repeat(201)}),
        json!({"description": "x".repeat(1001)}),
        json!({"completed": "yes"}),
    ] {
        assert_problem(app.send(&user, Method::PUT, &path, body).await, 422).await;
    }
    let now: Value = app.get(&user, &path).await.json().await.unwrap();
    assert_eq!(now, task, "a refused update changed nothing");
}

#[tokio::test]
async fn patch_complete_sets_completed() {
    let app = spawn_app().await;
    let user = app.user();
    let task = app.task(&user, "Finish").await;
    let path = format!("/api/v1/tasks/{}/complete", task["id"]);
    let done: Value = app
        .send(&user, Method::PATCH, &path, json!({"completed": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["completed"], true);
    let undone: Value = app
        .send(&user, Method::PATCH, &path, json!({"completed": false}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(undone["completed"], false);
    for body in [
        json!({}),
        json!({"completed": null}),
        json!({"completed": 1}),
    ] {
        assert_problem(app.send(&user, Method::PATCH, &path, body).await, 422).await;
    }
}

#[tokio::test]
async fn another_users_task_cannot_be_changed() {
    let app = spawn_app().await;
    let owner = app.user();
    let other = app.user();
    let task = app.task(&owner, "Mine").await;
    let path = format!("/api/v1/tasks/{}", task["id"]);
    assert_problem(
        app.send(&other, Method::PUT, &path, json!({"title": "Hacked"}))
            .await,
        404,
    )
    .await;
    assert_problem(
        app.send(
            &other,
            Method::PATCH,
            &format!("{path}/complete"),
            json!({"completed": true}),
        )
        .await,
        404,
    )
    .await;
    let still: Value = app.get(&owner, &path).await.json().await.unwrap();
    assert_eq!(still, task);
}

#[tokio::test]
async fn an_update_that_changes_nothing_keeps_updated_at() {
    let app = spawn_app().await;
    let user = app.user();
    let task: Value = app
        .create(&user, json!({"title": "Same", "description": "as before"}))
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/v1/tasks/{}", task["id"]);
    for body in [
        json!({}),
        json!({"title": "Same"}),
        json!({"title": "Same", "description": "as before", "completed": false}),
        // Trimmed to the title the task already has.
        json!({"title": "  Same  "}),
    ] {
        let response = app.send(&user, Method::PUT, &path, body.clone()).await;
        assert_eq!(response.status(), 200, "{body}");
        let after: Value = response.json().await.unwrap();
        assert_eq!(after, task, "{body} changed nothing, updated_at included");
    }
    let complete = format!("{path}/complete");
    let after: Value = app
        .send(&user, Method::PATCH, &complete, json!({"completed": false}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        after, task,
        "completing with the same value changed nothing"
    );

    // A real change moves updated_at; the same value again leaves it there.
    let done: Value = app
        .send(&user, Method::PATCH, &complete, json!({"completed": true}))
        .await
        .json()
        .await
        .unwrap();
    assert!(done["updated_at"].as_str() > task["updated_at"].as_str());
    let again: Value = app
        .send(&user, Method::PUT, &path, json!({"completed": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, done);
    let cleared: Value = app
        .send(&user, Method::PUT, &path, json!({"description": null}))
        .await
        .json()
        .await
        .unwrap();
    assert!(cleared["updated_at"].as_str() > done["updated_at"].as_str());
    let stored: Value = app.get(&user, &path).await.json().await.unwrap();
    assert_eq!(stored, cleared);
}

#[tokio::test]
async fn a_whitespace_title_is_422_and_a_padded_one_is_trimmed() {
    let app = spawn_app().await;
    let user = app.user();
    let task = app.task(&user, "Keep").await;
    let path = format!("/api/v1/tasks/{}", task["id"]);
    for title in [" ", "\t\n", "\u{3000}\u{a0}"] {
        let body = assert_problem(
            app.send(&user, Method::PUT, &path, json!({"title": title}))
                .await,
            422,
        )
        .await;
        assert!(body["detail"].as_str().unwrap().contains("whitespace"));
    }
    let now: Value = app.get(&user, &path).await.json().await.unwrap();
    assert_eq!(now, task, "a refused update changed nothing");
    let renamed: Value = app
        .send(&user, Method::PUT, &path, json!({"title": "  New name\t"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renamed["title"], "New name");
}

/// `tasks_completed_total` counts tasks completed, not writes that send `completed: true`: a
/// second completion, or a form that saves a completed task's new title with every field,
/// completes nothing.
#[tokio::test]
async fn only_a_write_that_completes_a_task_counts_as_completed() {
    let app = spawn_app().await;
    let user = app.user();
    let completed_total = || async {
        let metrics = common::test_metrics::scrape(&app.client, &app.admin).await;
        common::test_metrics::sample(&metrics, "tasks_completed_total")
    };
    let task: Value = app
        .create(&user, json!({"title": "Draft"}))
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/v1/tasks/{}", task["id"]);
    let complete = format!("{path}/complete");
    let (app, user) = (&app, &user);
    let send = |method: Method, path: String, body: Value| async move {
        assert_eq!(app.send(user, method, &path, body).await.status(), 200);
    };

    send(Method::PATCH, complete.clone(), json!({"completed": true})).await;
    assert_eq!(completed_total().await, 1.0);
    send(Method::PATCH, complete.clone(), json!({"completed": true})).await;
    send(
        Method::PUT,
        path.clone(),
        json!({"title": "Final", "description": null, "completed": true}),
    )
    .await;
    assert_eq!(completed_total().await, 1.0, "it was completed already");
    send(Method::PATCH, complete, json!({"completed": false})).await;
    send(Method::PUT, path, json!({"completed": true})).await;
    assert_eq!(
        completed_total().await,
        2.0,
        "completed again after reopening"
    );
}
