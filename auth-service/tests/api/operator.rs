//! `auth-service users disable|enable|revoke-sessions|delete <email>`, run as the binary an
//! operator runs: exit status, one-line errors, the audit line, and the effect on the API.

use serde_json::Value;

use crate::helpers::{PASSWORD, TestApp, assert_problem, eventually_status, spawn_app};

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn users(app: &TestApp, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .arg("users")
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env("LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("the auth-service binary runs");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// The audit line of a successful run.
fn audit_line(run: &Run) -> Value {
    assert!(run.success, "failed: {}", run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|line| line.contains("\"audit\":true"))
        .unwrap_or_else(|| panic!("no audit line in {:?}", run.stdout));
    serde_json::from_str(line).expect("a JSON log line")
}

#[tokio::test]
async fn an_unknown_email_fails_with_one_line_on_stderr() {
    let app = spawn_app().await;
    for action in ["disable", "enable", "revoke-sessions", "delete"] {
        let run = users(&app, &[action, "nobody@example.com"]).await;
        assert!(!run.success, "{action} of an unknown email succeeded");
        assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
        assert!(
            run.stderr
                .contains("no account with email nobody@example.com"),
            "{}",
            run.stderr
        );
    }
    let run = users(&app, &["disable", "not an email"]).await;
    assert!(!run.success);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
}

#[tokio::test]
async fn a_disabled_account_cannot_log_in_or_refresh_until_enabled() {
    let app = spawn_app().await;
    let (email, login) = app.logged_in_user().await;
    let access = login["access_token"].as_str().unwrap().to_owned();

    let audit = audit_line(&users(&app, &["disable", &email.to_uppercase()]).await);
    assert_eq!(audit["action"], "disable");
    assert_eq!(audit["sessions_ended"], 1);
    let body = assert_problem(app.login(&email, PASSWORD).await, 401).await;
    assert_eq!(body["detail"], "this account is disabled");
    assert_problem(app.login(&email, "wrong password").await, 401).await;
    assert_problem(
        app.refresh(login["refresh_token"].as_str().unwrap()).await,
        401,
    )
    .await;
    // The running replica learns of the ended session from its poll of the table.
    eventually_status(401, || app.me(&access)).await;

    audit_line(&users(&app, &["enable", &email]).await);
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
    assert_problem(
        app.refresh(login["refresh_token"].as_str().unwrap()).await,
        401,
    )
    .await;
}

#[tokio::test]
async fn revoke_sessions_ends_every_session_but_keeps_the_password() {
    let app = spawn_app().await;
    let (email, login) = app.logged_in_user().await;
    let other = app.another_session(&email).await;
    let audit = audit_line(&users(&app, &["revoke-sessions", &email]).await);
    assert_eq!(audit["sessions_ended"], 2);
    for session in [&login, &other] {
        assert_problem(
            app.refresh(session["refresh_token"].as_str().unwrap())
                .await,
            401,
        )
        .await;
        let access = session["access_token"].as_str().unwrap().to_owned();
        eventually_status(401, || app.me(&access)).await;
    }
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn delete_removes_the_account_as_delete_me_does() {
    let app = spawn_app().await;
    let (email, login) = app.logged_in_user().await;
    let audit = audit_line(&users(&app, &["delete", &email]).await);
    assert_eq!(audit["action"], "delete");
    let user_id = audit["user_id"].as_str().unwrap().to_owned();
    assert_problem(app.login(&email, PASSWORD).await, 401).await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    eventually_status(401, || app.me(&access)).await;
    let feed = app.deleted_users("").await;
    assert_eq!(feed["entries"][0]["user_id"], user_id);
    // A second delete finds no account; the email is free for a new one.
    let run = users(&app, &["delete", &email]).await;
    assert!(
        !run.success && run.stderr.contains("no account"),
        "{}",
        run.stderr
    );
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
}
