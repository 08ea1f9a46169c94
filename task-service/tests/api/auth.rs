use common::token_attacks::forged_tokens;

use crate::helpers::{JWT_KEY, assert_problem, spawn_app};

#[tokio::test]
async fn every_endpoint_needs_a_bearer_token() {
    let app = spawn_app().await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/tasks"),
        (reqwest::Method::POST, "/api/v1/tasks"),
        (reqwest::Method::GET, "/api/v1/tasks/1"),
        (reqwest::Method::PUT, "/api/v1/tasks/1"),
        (reqwest::Method::PATCH, "/api/v1/tasks/1/complete"),
        (reqwest::Method::DELETE, "/api/v1/tasks/1"),
    ] {
        let response = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_problem(response, 401).await;
    }
}

#[tokio::test]
async fn every_forged_or_invalid_access_token_is_401() {
    let app = spawn_app().await;
    let user = app.user();
    app.task(&user, "exists").await;
    for (attack, token) in forged_tokens(JWT_KEY.as_bytes(), user.id) {
        let response = app
            .client
            .get(app.url("/api/v1/tasks"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{attack} was accepted");
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let user = app.user();
    assert_problem(app.get(&user, "/api/v1/taskz").await, 404).await;
    let response = app
        .send(
            &user,
            reqwest::Method::PATCH,
            "/api/v1/tasks",
            serde_json::json!({}),
        )
        .await;
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("GET")
    );
    assert_problem(response, 405).await;
}
