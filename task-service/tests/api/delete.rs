use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn delete_removes_the_task() {
    let app = spawn_app().await;
    let user = app.user();
    let task = app.task(&user, "Gone").await;
    let path = format!("/api/v1/tasks/{}", task["id"]);
    let response = app.send(&user, Method::DELETE, &path, json!(null)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"message": "Task deleted successfully"}));
    assert_problem(app.get(&user, &path).await, 404).await;
    assert_problem(
        app.send(&user, Method::DELETE, &path, json!(null)).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn another_users_task_cannot_be_deleted() {
    let app = spawn_app().await;
    let owner = app.user();
    let other = app.user();
    let task = app.task(&owner, "Keep").await;
    let path = format!("/api/v1/tasks/{}", task["id"]);
    assert_problem(
        app.send(&other, Method::DELETE, &path, json!(null)).await,
        404,
    )
    .await;
    assert_eq!(app.get(&owner, &path).await.status(), 200);
}
