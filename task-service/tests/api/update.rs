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
    assert!(updated["updated_at"].as_str() >= task["updated_at"].as_str());

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
