use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn create_returns_201_with_the_task() {
    let app = spawn_app().await;
    let user = app.user();
    let response = app
        .create(
            &user,
            json!({"title": "Buy milk", "description": "2 litres"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let task: Value = response.json().await.unwrap();
    assert!(task["id"].as_i64().unwrap() > 0);
    assert_eq!(task["user_id"], user.id.to_string());
    assert_eq!(task["title"], "Buy milk");
    assert_eq!(task["description"], "2 litres");
    assert_eq!(task["completed"], false);
    for field in ["created_at", "updated_at"] {
        let at = chrono::DateTime::parse_from_rfc3339(task[field].as_str().unwrap()).unwrap();
        assert_eq!(at.offset().local_minus_utc(), 0, "timestamps are UTC");
    }
    assert_eq!(app.tasks_held(&user).await, 1);
}

#[tokio::test]
async fn description_is_optional_and_may_be_null() {
    let app = spawn_app().await;
    let user = app.user();
    for body in [
        json!({"title": "a"}),
        json!({"title": "a", "description": null}),
    ] {
        let task: Value = app.create(&user, body).await.json().await.unwrap();
        assert_eq!(task["description"], Value::Null);
    }
}

#[tokio::test]
async fn lengths_count_characters_not_bytes() {
    let app = spawn_app().await;
    let user = app.user();
    let title = "🦀".repeat(200);
    let description = "é".repeat(1000);
    let response = app
        .create(&user, json!({"title": title, "description": description}))
        .await;
    assert_eq!(response.status(), 201);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["title"], title);
}

#[tokio::test]
async fn invalid_tasks_are_422() {
    let app = spawn_app().await;
    let user = app.user();
    for body in [
        json!({"title": ""}),
        json!({"title": "   "}),
        json!({"title": "\t\u{3000}\n"}),
        json!({"title": "x".repeat(201)}),
        json!({"title": format!(" {} ", "x".repeat(199))}),
        json!({"title": "ok", "description": "x".repeat(1001)}),
        json!({"title": "nul\u{0}"}),
        json!({"title": "ok", "description": "nul\u{0}"}),
        json!({"title": null}),
        json!({"title": 5}),
        json!({"description": "no title"}),
        json!({}),
        json!("just a string"),
    ] {
        assert_problem(app.create(&user, body).await, 422).await;
    }
    let malformed = app
        .client
        .post(app.url("/api/v1/tasks"))
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body("{\"title\":")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 422).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks.tasks")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing invalid was stored");
}

#[tokio::test]
async fn non_json_is_415_and_bodies_over_64_kib_are_413() {
    let app = spawn_app().await;
    let user = app.user();
    let response = app
        .client
        .post(app.url("/api/v1/tasks"))
        .bearer_auth(&user.token)
        .body("title=x")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415).await;
    let big = json!({"title": "x", "description": "y".repeat(65 * 1024)});
    assert_problem(app.create(&user, big).await, 413).await;
}

#[tokio::test]
async fn a_trailing_slash_works_too() {
    let app = spawn_app().await;
    let user = app.user();
    let response = app
        .send(
            &user,
            reqwest::Method::POST,
            "/api/v1/tasks/",
            json!({"title": "a"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let listed: Vec<Value> = app.get(&user, "/api/v1/tasks/").await.json().await.unwrap();
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn titles_are_stored_trimmed() {
    let app = spawn_app().await;
    let user = app.user();
    let task = app.task(&user, "  Buy milk \n").await;
    assert_eq!(task["title"], "Buy milk");
    let stored: Value = app
        .get(&user, &format!("/api/v1/tasks/{}", task["id"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["title"], "Buy milk");
}
