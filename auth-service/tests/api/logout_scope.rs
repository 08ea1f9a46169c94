//! `POST /logout?scope=others|global`: end every other session, or all of them, with a bearer
//! token; an unknown scope is a 400.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn logout_others_ends_every_session_but_the_callers() {
    let app = spawn_app().await;
    let (email, mine) = app.logged_in_user().await;
    let others = [
        app.another_session(&email).await,
        app.another_session(&email).await,
    ];
    let (_, stranger) = app.logged_in_user().await;
    let access = mine["access_token"].as_str().unwrap();

    assert_eq!(app.logout_scope("others", Some(access)).await.status(), 204);
    for other in &others {
        assert_problem(app.me(other["access_token"].as_str().unwrap()).await, 401).await;
        assert_problem(
            app.refresh(other["refresh_token"].as_str().unwrap()).await,
            401,
        )
        .await;
    }
    assert_eq!(app.me(access).await.status(), 200);
    assert_eq!(app.sessions(access).await.len(), 1);
    assert_eq!(
        app.me(stranger["access_token"].as_str().unwrap())
            .await
            .status(),
        200,
        "another user's sessions are untouched"
    );
}

#[tokio::test]
async fn logout_global_ends_every_session_the_callers_too() {
    let app = spawn_app().await;
    let (email, mine) = app.logged_in_user().await;
    let other = app.another_session(&email).await;

    let access = mine["access_token"].as_str().unwrap();
    assert_eq!(app.logout_scope("global", Some(access)).await.status(), 204);
    for session in [&mine, &other] {
        assert_problem(app.me(session["access_token"].as_str().unwrap()).await, 401).await;
        assert_problem(
            app.refresh(session["refresh_token"].as_str().unwrap())
                .await,
            401,
        )
        .await;
    }
    // The account itself is fine.
    assert_eq!(app.another_session(&email).await["token_type"], "bearer");
}

#[tokio::test]
async fn an_unknown_scope_is_400_and_ends_nothing() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let refresh = login["refresh_token"].as_str().unwrap();
    let response = app
        .post(
            "/api/v1/auth/logout?scope=everyone",
            json!({"refresh_token": refresh}),
        )
        .await;
    let body = assert_problem(response, 400).await;
    assert!(
        body["detail"].as_str().unwrap().contains("everyone"),
        "{body}"
    );
    // `local` is the default and may be named.
    let local = app
        .post(
            "/api/v1/auth/logout?scope=local",
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(local.status(), 204);
}

#[tokio::test]
async fn others_and_global_need_a_bearer_token_not_a_refresh_token() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    for scope in ["others", "global"] {
        let response = app
            .post(
                &format!("/api/v1/auth/logout?scope={scope}"),
                json!({"refresh_token": login["refresh_token"]}),
            )
            .await;
        assert_problem(response, 401).await;
    }
    assert_eq!(
        app.me(login["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
}
