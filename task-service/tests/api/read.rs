use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app};

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
