//! `POST /password`: a new password ends every older session, the caller's too, and answers
//! with a new session; a wrong current password is a failed login.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, assert_problem, spawn_app, spawn_with};

const NEW_PASSWORD: &str = "staple battery horse correct";

#[tokio::test]
async fn a_new_password_ends_every_session_and_retires_the_old_password() {
    let app = spawn_app().await;
    let (email, first) = app.logged_in_user().await;
    let second = app.another_session(&email).await;

    let response = app
        .change_password(
            first["access_token"].as_str().unwrap(),
            PASSWORD,
            NEW_PASSWORD,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let fresh: Value = response.json().await.unwrap();
    assert_eq!(fresh["token_type"], "bearer");

    for old in [&first, &second] {
        assert_problem(app.me(old["access_token"].as_str().unwrap()).await, 401).await;
        assert_problem(
            app.refresh(old["refresh_token"].as_str().unwrap()).await,
            401,
        )
        .await;
    }
    let access = fresh["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await.status(), 200);
    assert_eq!(
        app.sessions(access).await.len(),
        1,
        "only the new session is live"
    );
    assert_eq!(
        app.refresh(fresh["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_problem(app.login(&email, PASSWORD).await, 401).await;
    assert_eq!(app.login(&email, NEW_PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_wrong_current_password_is_401_and_counts_as_a_failed_login() {
    let app = spawn_with(&["--failed-login-limit", "2"]).await;
    let (email, login) = app.logged_in_user().await;
    let access = login["access_token"].as_str().unwrap();
    for _ in 0..2 {
        let body = assert_problem(
            app.change_password(access, "not the password", NEW_PASSWORD)
                .await,
            401,
        )
        .await;
        assert_eq!(body["detail"], "the password is wrong");
    }
    // The (account, client) budget is spent: password checks from here are refused, logins too.
    assert_problem(
        app.change_password(access, PASSWORD, NEW_PASSWORD).await,
        429,
    )
    .await;
    assert_problem(app.login(&email, PASSWORD).await, 429).await;
    assert_eq!(app.me(access).await.status(), 200, "nothing changed");
}

#[tokio::test]
async fn a_new_password_outside_the_register_rules_is_400_and_changes_nothing() {
    let app = spawn_app().await;
    let (email, login) = app.logged_in_user().await;
    let access = login["access_token"].as_str().unwrap();
    let too_long = "x".repeat(73);
    for (new, says) in [
        ("short", "at least 8"),
        (too_long.as_str(), "at most 72 bytes"),
    ] {
        let body = assert_problem(app.change_password(access, PASSWORD, new).await, 400).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("new_password") && detail.contains(says),
            "{detail}"
        );
    }
    let missing = app
        .call(
            reqwest::Method::POST,
            "/api/v1/auth/password",
            Some(access),
            Some(json!({"current_password": PASSWORD})),
        )
        .await;
    assert_problem(missing, 400).await;
    assert_eq!(app.me(access).await.status(), 200);
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn changing_the_password_needs_a_live_access_token() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let anonymous = app
        .call(
            reqwest::Method::POST,
            "/api/v1/auth/password",
            None,
            Some(body),
        )
        .await;
    let problem = assert_problem(anonymous, 401).await;
    assert_eq!(problem["detail"], "missing bearer token");
    assert_eq!(
        app.logout(login["refresh_token"].as_str().unwrap())
            .await
            .status(),
        204
    );
    let ended = app
        .change_password(
            login["access_token"].as_str().unwrap(),
            PASSWORD,
            NEW_PASSWORD,
        )
        .await;
    assert_problem(ended, 401).await;
}

#[tokio::test]
async fn a_saturated_hashing_pool_answers_503_to_password_checks_too() {
    let app = spawn_with(&["--bcrypt-max-concurrency", "1", "--bcrypt-max-queue", "0"]).await;
    let (_, login) = app.logged_in_user().await;
    let access = login["access_token"].as_str().unwrap();
    // Wrong passwords, so that whatever gets a slot changes nothing.
    let changes = (0..4).map(|_| app.change_password(access, "not the password", NEW_PASSWORD));
    let deletions = (0..4).map(|_| app.delete_me(access, "not the password"));
    let (changes, deletions) = tokio::join!(
        futures::future::join_all(changes),
        futures::future::join_all(deletions)
    );
    let mut busy = 0;
    for response in changes.into_iter().chain(deletions) {
        match response.status().as_u16() {
            401 => {}
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                assert_problem(response, 503).await;
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        busy >= 1,
        "checks beyond the one slot were refused rather than queued"
    );
    assert_eq!(app.me(access).await.status(), 200);
}

/// As at login: a password change that meets a rehash of the current password (a login after a
/// BCRYPT_COST increase) checks the current password again and goes through.
#[tokio::test]
async fn a_password_change_that_meets_a_rehash_of_the_current_password_goes_through() {
    let app = spawn_app().await;
    let (email, login) = app.logged_in_user().await;
    let access = login["access_token"].as_str().unwrap();
    let rehash = bcrypt::hash(PASSWORD, 11).unwrap();
    let changed = app
        .while_the_hash_changes(
            &email,
            &rehash,
            app.change_password(access, PASSWORD, "a brand new passphrase"),
        )
        .await;
    assert_eq!(changed.status(), 200);
    assert_eq!(
        app.login(&email, "a brand new passphrase").await.status(),
        200
    );
}
