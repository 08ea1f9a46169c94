//! Sessions end everywhere: a logout at auth-service stops the session's access tokens here
//! within a bounded time, through the feed, without a call per request.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{fresh_database, spawn_auth, spawn_on};

#[tokio::test]
async fn a_logged_out_sessions_token_stops_working_within_seconds() {
    let database = fresh_database().await;
    let (auth_api, auth_admin) = spawn_auth(&database, &[]).await;
    let tasks = spawn_on(
        &database,
        &[
            "--auth-admin-url",
            &auth_admin,
            "--revocation-poll-seconds",
            "1",
        ],
    )
    .await;

    let client = reqwest::Client::new();
    let credentials = json!({"email": "revoke@example.com", "password": "correct horse battery"});
    let registered = client
        .post(format!("{auth_api}/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login: Value = client
        .post(format!("{auth_api}/api/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = login["access_token"].as_str().unwrap();
    let create = |title: &'static str| {
        client
            .post(tasks.url("/api/v1/tasks"))
            .bearer_auth(access)
            .json(&json!({"title": title}))
            .send()
    };
    assert_eq!(create("before logout").await.unwrap().status(), 201);

    let logout = client
        .post(format!("{auth_api}/api/v1/auth/logout"))
        .json(&json!({"refresh_token": login["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let started = Instant::now();
    loop {
        let status = create("after logout").await.unwrap().status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 201);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the ended session still works after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = common::test_metrics::scrape(&client, &tasks.admin).await;
    let age = common::test_metrics::sample(&metrics, "revocation_feed_age_seconds");
    assert!(age < 3.0, "the feed is fresh: {age}");
}
