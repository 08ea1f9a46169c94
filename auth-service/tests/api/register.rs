use serde_json::json;

use crate::helpers::{PASSWORD, assert_problem, email, spawn_app};

#[tokio::test]
async fn register_returns_201_with_message_id_and_email() {
    let app = spawn_app().await;
    let email = email();
    let response = app.register(&format!("  {email} "), PASSWORD).await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["message"], "User created successfully");
    assert_eq!(body["email"], email, "the email is stored trimmed");
    let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();

    let stored: (String, String) =
        sqlx::query_as("SELECT email, password_hash FROM auth.users WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db().await)
            .await
            .unwrap();
    assert_eq!(stored.0, email);
    assert!(
        stored.1.starts_with("$2b$10$"),
        "bcrypt at the configured cost"
    );
    assert!(!stored.1.contains(PASSWORD));
}

#[tokio::test]
async fn the_same_email_in_another_case_is_409() {
    let app = spawn_app().await;
    let email = email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    let body = assert_problem(app.register(&email.to_uppercase(), PASSWORD).await, 409).await;
    assert_eq!(body["detail"], "an account with this email already exists");
}

#[tokio::test]
async fn invalid_emails_are_400() {
    let app = spawn_app().await;
    // A NUL in a display form's name was never checked and reached PostgreSQL (a 500).
    for bad in [
        "",
        "not-an-email",
        "a@",
        "x\u{0}y@example.com",
        "\u{0} <nul@example.com>",
    ] {
        assert_problem(app.register(bad, PASSWORD).await, 400).await;
        assert_problem(app.login(bad, PASSWORD).await, 400).await;
    }
    // A display form (`Name <address>`) no longer registers: one mailbox could be registered
    // under many names. A login still looks it up (accounts registered so before can log in).
    assert_problem(
        app.register("Alice <alice@example.com>", PASSWORD).await,
        400,
    )
    .await;
    assert_problem(app.login("Alice <alice@example.com>", PASSWORD).await, 401).await;
    let long = format!("{}@example.com", "a".repeat(250));
    assert_problem(app.register(&long, PASSWORD).await, 400).await;
}

#[tokio::test]
async fn passwords_must_be_8_characters_to_72_bytes() {
    let app = spawn_app().await;
    let body = assert_problem(app.register(&email(), "1234567").await, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("8 characters"));
    let body = assert_problem(app.register(&email(), &"a".repeat(73)).await, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("72 bytes"));
    // 37 two-byte characters: 74 bytes, refused although only 37 characters.
    assert_problem(app.register(&email(), &"é".repeat(37)).await, 400).await;
    assert_problem(app.register(&email(), "abcdefgh\u{0}").await, 400).await;
    assert_eq!(app.register(&email(), &"a".repeat(72)).await.status(), 201);
}

#[tokio::test]
async fn a_72_byte_password_is_not_truncated() {
    let app = spawn_app().await;
    let email = email();
    let password = format!("{}A", "a".repeat(71));
    assert_eq!(app.register(&email, &password).await.status(), 201);
    assert_eq!(app.login(&email, &password).await.status(), 200);
    // Differs only in the 72nd byte: a truncating implementation that kept 71 would accept it.
    let other = format!("{}B", "a".repeat(71));
    assert_eq!(app.login(&email, &other).await.status(), 401);
    // One byte more than bcrypt reads is refused, not silently cut to the stored password.
    assert_problem(app.login(&email, &format!("{password}X")).await, 400).await;
}

#[tokio::test]
async fn malformed_bodies_are_400_problems() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({"email": email()}),
        json!({"password": PASSWORD}),
        json!({"email": 5, "password": PASSWORD}),
        json!({"email": email(), "password": null}),
        json!([1, 2]),
    ] {
        assert_problem(app.post("/api/v1/auth/register", body).await, 400).await;
    }
    let response = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400).await;
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/api/v1/auth/register",
            json!({"email": email(), "password": PASSWORD, "is_admin": true}),
        )
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn the_password_never_appears_in_an_error_body() {
    let app = spawn_app().await;
    let secret = "my-secret-password-which-is-far-too-long-for-bcrypt-to-read-0123456789-abcdef";
    let body = assert_problem(app.register(&email(), secret).await, 400).await;
    assert!(!body.to_string().contains(secret));
    let body = assert_problem(app.register("bad", secret).await, 400).await;
    assert!(!body.to_string().contains(secret));
}
