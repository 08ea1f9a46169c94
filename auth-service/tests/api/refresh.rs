use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

fn refresh_token(body: &Value) -> String {
    body["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_issues_a_working_access_token() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let response = app.refresh(&refresh_token(&login)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86_400);
    assert_ne!(refresh_token(&body), refresh_token(&login));
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await.status(), 200);
    // The successor refreshes in turn.
    assert_eq!(app.refresh(&refresh_token(&body)).await.status(), 200);
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_revokes_the_whole_session() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let first = refresh_token(&login);
    let rotated: Value = app.refresh(&first).await.json().await.unwrap();
    let successor = refresh_token(&rotated);

    let reuse = assert_problem(app.refresh(&first).await, 401).await;
    assert_eq!(reuse["detail"], "invalid refresh token");
    // The thief's replay killed the family: the legitimate successor is dead too,
    assert_problem(app.refresh(&successor).await, 401).await;
    // and so is every access token of the session.
    assert_problem(app.me(login["access_token"].as_str().unwrap()).await, 401).await;
    assert_problem(app.me(rotated["access_token"].as_str().unwrap()).await, 401).await;

    let revoked: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM auth.sessions WHERE revoked_at IS NOT NULL")
            .fetch_optional(&app.db().await)
            .await
            .unwrap();
    assert_eq!(revoked.as_deref(), Some("refresh_reuse"));
}

/// The `exp` claim of an access token, read without verifying it.
fn expiry_of(access_token: &str) -> i64 {
    use base64::Engine;
    let payload = access_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["exp"].as_i64().unwrap()
}

#[tokio::test]
async fn a_refresh_extends_its_session_past_the_new_access_token() {
    // The revocation feed keeps a revoked session until `access_expires_at`: that must cover
    // every access token the session has handed out, refreshed ones included.
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let db = app.db().await;
    let session_expiry = || async {
        sqlx::query_as::<_, (i64, Option<f64>)>(
            "SELECT count(*), extract(epoch FROM max(access_expires_at))::float8 FROM auth.sessions",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    let (sessions, before) = session_expiry().await;
    assert_eq!(sessions, 1);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let rotated: Value = app
        .refresh(&refresh_token(&login))
        .await
        .json()
        .await
        .unwrap();
    let (sessions, after) = session_expiry().await;
    assert_eq!(sessions, 1, "a refresh continues its session");
    let (before, after) = (before.unwrap(), after.unwrap());
    assert!(after > before + 1.0, "extended: {before} -> {after}");
    let exp = expiry_of(rotated["access_token"].as_str().unwrap());
    // and stays on the feed as long as verifiers accept the token: `exp` + the leeway (30 s).
    assert!(
        after >= (exp + 30) as f64,
        "the session outlives its new token: {after} < {exp} + 30"
    );
}

#[tokio::test]
async fn of_concurrent_refreshes_with_one_token_exactly_one_succeeds() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let token = refresh_token(&login);
    let responses = join_all((0..10).map(|_| app.refresh(&token))).await;
    let mut winners = Vec::new();
    for response in responses {
        match response.status().as_u16() {
            200 => winners.push(response.json::<Value>().await.unwrap()),
            401 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one refresh wins");
    // The losers presented a spent token: the winner's successor is revoked with the session.
    assert_problem(app.refresh(&refresh_token(&winners[0])).await, 401).await;
}

#[tokio::test]
async fn any_string_that_is_not_a_live_token_is_401() {
    let app = spawn_app().await;
    for token in ["", "garbage", &"x".repeat(10_000)] {
        let response = app.refresh(token).await;
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        assert_problem(response, 401).await;
    }
}

#[tokio::test]
async fn an_expired_refresh_token_is_401() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    sqlx::query("UPDATE auth.refresh_tokens SET expires_at = now() - interval '1 second'")
        .execute(&app.db().await)
        .await
        .unwrap();
    assert_problem(app.refresh(&refresh_token(&login)).await, 401).await;
}

#[tokio::test]
async fn a_malformed_refresh_body_is_400() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({"refresh_token": 5}),
        json!({"refresh_token": null}),
    ] {
        assert_problem(app.post("/api/v1/auth/refresh", body).await, 400).await;
    }
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let token = refresh_token(&login);
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM auth.refresh_tokens")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    use sha2::Digest;
    assert_eq!(stored[0], sha2::Sha256::digest(token.as_bytes()).to_vec());
}
