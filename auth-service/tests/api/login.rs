use futures::future::join_all;
use serde_json::Value;

use crate::helpers::{JWT_KEY, PASSWORD, assert_problem, email, spawn_app, spawn_with};

fn claims(token: &str) -> Value {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["todo-api"]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_KEY.as_bytes()),
        &validation,
    )
    .expect("a valid HS256 token")
    .claims
}

#[tokio::test]
async fn login_returns_a_bearer_access_token_and_a_refresh_token() {
    let app = spawn_app().await;
    let email = email();
    let registered: Value = app.register(&email, PASSWORD).await.json().await.unwrap();
    let response = app.login(&email, PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86_400);
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);

    let access = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    assert_eq!(header.kid.as_deref(), Some("default"));
    let claims = claims(access);
    assert_eq!(claims["sub"], registered["id"]);
    assert_eq!(claims["typ"], "access");
    assert_eq!(claims["iss"], "todo-auth");
    assert_eq!(claims["aud"], "todo-api");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        86_400
    );
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(claims["jti"].is_string() && claims["sid"].is_string());
}

#[tokio::test]
async fn emails_match_case_insensitively_and_trimmed() {
    let app = spawn_app().await;
    let email = email();
    app.register(&email, PASSWORD).await;
    let response = app
        .login(&format!(" {} ", email.to_uppercase()), PASSWORD)
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_401() {
    let app = spawn_app().await;
    let email = email();
    app.register(&email, PASSWORD).await;
    let wrong = app.login(&email, "wrong password").await;
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    let wrong = assert_problem(wrong, 401).await;
    let unknown = assert_problem(app.login(&crate::helpers::email(), PASSWORD).await, 401).await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["detail"], "invalid email or password");
}

async fn hashes_run(app: &crate::helpers::TestApp) -> u64 {
    let metrics = common::test_metrics::scrape(&app.client, &app.admin).await;
    common::test_metrics::sample(&metrics, "bcrypt_queue_wait_seconds_count") as u64
}

#[tokio::test]
async fn an_unknown_email_still_costs_one_bcrypt_verification() {
    let app = spawn_app().await;
    let before = hashes_run(&app).await;
    assert_problem(app.login(&email(), PASSWORD).await, 401).await;
    assert_eq!(hashes_run(&app).await, before + 1);
}

#[tokio::test]
async fn login_passwords_must_be_1_to_72_bytes() {
    let app = spawn_app().await;
    let email = email();
    app.register(&email, PASSWORD).await;
    assert_problem(app.login(&email, "").await, 400).await;
    assert_problem(app.login(&email, &"a".repeat(73)).await, 400).await;
    assert_problem(app.login("not an email", PASSWORD).await, 400).await;
}

#[tokio::test]
async fn a_saturated_hashing_pool_answers_503_with_retry_after() {
    let app = spawn_with(&["--bcrypt-max-concurrency", "1", "--bcrypt-max-queue", "0"]).await;
    let email = email();
    app.register(&email, PASSWORD).await;
    let responses = join_all((0..8).map(|_| app.login(&email, PASSWORD))).await;
    let mut busy = 0;
    let mut ok = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                assert_problem(response, 503).await;
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 1, "the slot served someone");
    assert!(busy >= 1, "the rest were refused rather than queued");
}

#[tokio::test]
async fn a_hash_of_a_lower_cost_is_upgraded_at_login() {
    let app = spawn_app().await;
    let email = email();
    let weak = bcrypt::hash(PASSWORD, 4).unwrap();
    let pool = app.db().await;
    sqlx::query("INSERT INTO auth.users (id, email, password_hash) VALUES ($1, $2, $3)")
        .bind(uuid::Uuid::new_v4())
        .bind(&email)
        .bind(&weak)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
    // The rehash runs after the answer, on a low-priority hashing thread: 30 s is a hang guard.
    let stored = || async {
        sqlx::query_scalar::<_, String>("SELECT password_hash FROM auth.users WHERE email = $1")
            .bind(&email)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let upgraded = common::test_wait::eventually(std::time::Duration::from_secs(30), || async {
        stored().await.starts_with("$2b$10$")
    })
    .await;
    assert!(upgraded, "still {}", stored().await);
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
}

/// Registration took `Name <address>` forms before it refused them; such an account, stored
/// under that string, still logs in with it.
#[tokio::test]
async fn an_account_registered_under_a_display_form_still_logs_in() {
    let app = spawn_app().await;
    let stored = format!("Alice <{}>", email());
    let hash = bcrypt::hash(PASSWORD, 10).unwrap();
    sqlx::query("INSERT INTO auth.users (id, email, password_hash) VALUES ($1, $2, $3)")
        .bind(uuid::Uuid::new_v4())
        .bind(&stored)
        .bind(&hash)
        .execute(&app.db().await)
        .await
        .unwrap();
    assert_eq!(app.login(&stored, PASSWORD).await.status(), 200);
}

/// A login racing another one's rehash of the same password (after a BCRYPT_COST increase)
/// finds the account changed when it starts its session. The password still opens the account,
/// so it is checked again and the login succeeds. Here the rehash is an uncommitted UPDATE the
/// login's session start waits for.
#[tokio::test]
async fn a_login_that_meets_a_rehash_of_its_password_still_succeeds() {
    let app = spawn_app().await;
    let email = email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    let rehash = bcrypt::hash(PASSWORD, 11).unwrap();
    let login = app
        .while_the_hash_changes(&email, &rehash, app.login(&email, PASSWORD))
        .await;
    assert_eq!(login.status(), 200);
    // A new password in that place is still refused.
    let changed = bcrypt::hash("another password entirely", 10).unwrap();
    let login = app
        .while_the_hash_changes(&email, &changed, app.login(&email, PASSWORD))
        .await;
    assert_problem(login, 401).await;
}
