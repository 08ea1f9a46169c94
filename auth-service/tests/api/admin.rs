//! The admin port: health, readiness, metrics, the revocation feed, and the drain on stop.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app, start_on};

#[tokio::test]
async fn healthz_answers_on_both_ports() {
    let app = spawn_app().await;
    for base in [&app.address, &app.admin] {
        let response = app
            .client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn readyz_is_200_on_a_migrated_database() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/readyz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn readyz_is_503_when_the_schema_is_not_migrated() {
    let server = common::postgres::server().await.unwrap();
    let empty = server.fresh_database(&[]).await.unwrap();
    let app = start_on(&empty, &[]).await;
    let response = app
        .client
        .get(format!("{}/readyz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn metrics_are_labelled_by_route_template() {
    let app = spawn_app().await;
    app.logged_in_user().await;
    app.client
        .get(app.url("/no/such/path/123"))
        .send()
        .await
        .unwrap();
    let text = common::test_metrics::scrape(&app.client, &app.admin).await;
    assert!(
        text.contains(
            r#"http_server_requests_total{method="POST",route="/api/v1/auth/login",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#));
    assert!(
        !text.contains("/no/such/path"),
        "raw paths never become labels"
    );
    assert!(text.contains(r#"auth_logins_total{outcome="success"} 1"#));
    assert!(text.contains(r#"auth_registrations_total{outcome="created"} 1"#));
    assert!(text.contains(r#"build_info{service="auth-service""#));
    assert!(text.contains("db_pool_connections"));
}

#[tokio::test]
async fn the_revocation_feed_lists_ended_sessions() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let feed_url = format!("{}/internal/revoked-sessions", app.admin);
    let before: Vec<Value> = app
        .client
        .get(&feed_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(before.is_empty());
    app.logout(login["refresh_token"].as_str().unwrap()).await;
    let after: Vec<Value> = app
        .client
        .get(&feed_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid =
        common::token_attacks::payload(login["access_token"].as_str().unwrap())["sid"].clone();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["sid"], sid);
    // `since` after the revocation leaves it out.
    let later = (chrono::Utc::now() + chrono::Duration::seconds(60))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none: Vec<Value> = app
        .client
        .get(format!("{feed_url}?since={later}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(none.is_empty());
    let bad = app
        .client
        .get(format!("{feed_url}?since=yesterday"))
        .send()
        .await
        .unwrap();
    assert_problem(bad, 400).await;
}

#[tokio::test]
async fn on_stop_readiness_fails_while_requests_are_still_served() {
    // Long enough for the pause and both requests below on a busy machine.
    let app = crate::helpers::spawn_with(&["--shutdown-delay-seconds", "5"]).await;
    app.stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = app
        .client
        .get(format!("{}/readyz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "draining");
    let served = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        served.status(),
        200,
        "the API serves on during the shutdown delay"
    );
    tokio::time::timeout(Duration::from_secs(15), app.stopped)
        .await
        .expect("the server stops after the delay")
        .unwrap();
}
