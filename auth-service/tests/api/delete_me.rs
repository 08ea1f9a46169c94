//! `DELETE /me`: the account goes, every session ends at once, the deletion is on the feed
//! task-service purges from, and the email can register again.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, assert_problem, spawn_app, spawn_with};

#[tokio::test]
async fn deleting_the_account_ends_it_and_frees_the_email() {
    let app = spawn_app().await;
    let (email, login) = app.logged_in_user().await;
    let other = app.another_session(&email).await;
    let access = login["access_token"].as_str().unwrap();
    let me: Value = app.me(access).await.json().await.unwrap();

    assert_eq!(app.delete_me(access, PASSWORD).await.status(), 204);
    for session in [&login, &other] {
        assert_problem(app.me(session["access_token"].as_str().unwrap()).await, 401).await;
        assert_problem(
            app.refresh(session["refresh_token"].as_str().unwrap())
                .await,
            401,
        )
        .await;
    }
    assert_problem(app.login(&email, PASSWORD).await, 401).await;

    let feed = app.deleted_users("after=0").await;
    let entries = feed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["user_id"], me["id"]);
    assert_eq!(feed["pruned_through"], 0);
    let seq = entries[0]["seq"].as_i64().unwrap();
    let after = app.deleted_users(&format!("after={seq}")).await;
    assert_eq!(after["entries"], json!([]), "the cursor moves past it");

    let again = app.register(&email, PASSWORD).await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["id"], me["id"], "a new user, not the old one back");
}

#[tokio::test]
async fn a_wrong_password_deletes_nothing() {
    let app = spawn_app().await;
    let (email, login) = app.logged_in_user().await;
    let access = login["access_token"].as_str().unwrap();
    let body = assert_problem(app.delete_me(access, "not the password").await, 401).await;
    assert_eq!(body["detail"], "the password is wrong");
    assert_eq!(app.me(access).await.status(), 200);
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn wrong_passwords_count_as_failed_logins() {
    let app = spawn_with(&["--failed-login-limit", "2"]).await;
    let (email, login) = app.logged_in_user().await;
    let access = login["access_token"].as_str().unwrap();
    for _ in 0..2 {
        assert_problem(app.delete_me(access, "not the password").await, 401).await;
    }
    // A stolen access token is no way around the limit: the (account, client) budget is spent,
    // so the right password is refused here too, and so is a login.
    assert_problem(app.delete_me(access, PASSWORD).await, 429).await;
    assert_problem(app.login(&email, PASSWORD).await, 429).await;
    assert_eq!(app.me(access).await.status(), 200, "nothing was deleted");
}

#[tokio::test]
async fn deleting_needs_a_bearer_token_and_a_password() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let access = login["access_token"].as_str().unwrap();
    let anonymous = app
        .call(
            reqwest::Method::DELETE,
            "/api/v1/auth/me",
            None,
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_problem(anonymous, 401).await;
    for body in [json!({}), json!({"password": ""}), json!({"password": 7})] {
        let response = app
            .call(
                reqwest::Method::DELETE,
                "/api/v1/auth/me",
                Some(access),
                Some(body),
            )
            .await;
        assert_problem(response, 400).await;
    }
    assert_eq!(app.me(access).await.status(), 200);
}

#[tokio::test]
async fn the_deleted_users_feed_refuses_a_bad_query() {
    let app = spawn_app().await;
    for query in ["after=x", "limit=0", "limit=1001"] {
        let response = app
            .client
            .get(format!("{}/internal/deleted-users?{query}", app.admin))
            .send()
            .await
            .unwrap();
        assert_problem(response, 400).await;
    }
}
