//! Abuse limits: per client IP and per account, counted in PostgreSQL so replicas share them.

use futures::future::join_all;
use reqwest::Response;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_problem, email, spawn_on, spawn_with};

async fn login_from(
    app: &TestApp,
    forwarded_for: Option<&str>,
    email: &str,
    password: &str,
) -> Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap()
}

fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn logins_past_the_per_ip_limit_get_429_with_retry_after() {
    let app = spawn_with(&["--login-limit-per-ip", "3"]).await;
    for _ in 0..3 {
        assert_eq!(app.login(&email(), PASSWORD).await.status(), 401);
    }
    let refused = app.login(&email(), PASSWORD).await;
    let wait = retry_after(&refused);
    // At most two windows: the rest of this one, then the weighted tail of it in the next.
    assert!((1..=120).contains(&wait), "Retry-After {wait}");
    let body = assert_problem(refused, 429).await;
    assert!(!body.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn two_replicas_together_allow_no_more_attempts_than_one() {
    let limit = ["--login-limit-per-ip", "4"];
    let one = spawn_with(&limit).await;
    let two = spawn_on(&one.database_url, &limit).await;
    // Concurrent attempts on both replicas at once: the shared counter still admits four.
    let emails: Vec<String> = (0..12).map(|_| email()).collect();
    let attempts = emails.iter().enumerate().map(|(i, e)| {
        let replica = if i % 2 == 0 { &one } else { &two };
        replica.login(e, PASSWORD)
    });
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let admitted = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, refused), (4, 8), "{statuses:?}");
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_with(&["--login-limit-per-ip", "2"]).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let spoofed = format!("198.51.100.{i}");
        statuses.push(
            login_from(&app, Some(&spoofed), &email(), PASSWORD)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![401, 401, 429, 429]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = spawn_with(&[
        "--login-limit-per-ip",
        "2",
        "--trusted-proxies",
        "127.0.0.1/32",
    ])
    .await;
    for i in 0..4 {
        let client = format!("198.51.100.{i}");
        let response = login_from(&app, Some(&client), &email(), PASSWORD).await;
        assert_eq!(response.status(), 401, "client {client} has its own budget");
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        // A forged left-most entry does not move the client off its bucket.
        let chain = "6.6.6.6, 203.0.113.50";
        statuses.push(
            login_from(&app, Some(chain), &email(), PASSWORD)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![401, 401, 429]);
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account_only() {
    let app = spawn_with(&["--failed-login-limit", "3"]).await;
    let victim = email();
    app.register(&victim, PASSWORD).await;
    let bystander = email();
    app.register(&bystander, PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(app.login(&victim, "wrong password").await.status(), 401);
    }
    // Even the right password waits now: guessing has to stop, not just fail.
    let locked = app.login(&victim.to_uppercase(), PASSWORD).await;
    assert!(retry_after(&locked) > 60);
    assert_problem(locked, 429).await;
    assert_eq!(app.login(&bystander, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn registrations_past_the_per_ip_limit_get_429() {
    let app = spawn_with(&["--register-limit-per-ip", "2"]).await;
    assert_eq!(app.register(&email(), PASSWORD).await.status(), 201);
    assert_eq!(app.register(&email(), PASSWORD).await.status(), 201);
    assert_problem(app.register(&email(), PASSWORD).await, 429).await;
}

#[tokio::test]
async fn limits_can_be_turned_off() {
    let app = spawn_with(&["--login-limit-per-ip", "1", "--rate-limit-enabled", "false"]).await;
    for _ in 0..4 {
        assert_eq!(app.login(&email(), PASSWORD).await.status(), 401);
    }
}
