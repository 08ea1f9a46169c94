//! How long a session lives: the reuse grace for racing tabs, and the absolute lifetime that
//! no refresh extends.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use crate::helpers::{assert_problem, claims, session_id, spawn_with};

fn refresh_token(body: &Value) -> String {
    body["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn within_the_reuse_grace_racing_refreshes_all_get_a_working_pair() {
    let app = spawn_with(&["--refresh-token-reuse-grace-seconds", "60"]).await;
    let (_, login) = app.logged_in_user().await;
    let token = refresh_token(&login);

    let answers = join_all((0..8).map(|_| app.refresh(&token))).await;
    let mut pairs = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 200, "every racing tab gets a pair");
        pairs.push(answer.json::<Value>().await.unwrap());
    }
    // Each pair works, and keeps working: the session was not revoked. And each is the same
    // session's, not a new login's (a grace that opened sessions would outlive every logout).
    let session = session_id(login["access_token"].as_str().unwrap());
    for pair in &pairs {
        assert_eq!(session_id(pair["access_token"].as_str().unwrap()), session);
        assert_eq!(
            app.me(pair["access_token"].as_str().unwrap())
                .await
                .status(),
            200
        );
        assert_eq!(app.refresh(&refresh_token(pair)).await.status(), 200);
    }
    let metrics = common::test_metrics::scrape(&app.client, &app.admin).await;
    assert_eq!(
        common::test_metrics::sample(&metrics, "auth_refresh_reuse_graced_total"),
        7.0
    );
    assert_eq!(
        common::test_metrics::sample(&metrics, "auth_refresh_reuse_detected_total"),
        0.0
    );
}

#[tokio::test]
async fn a_pair_issued_within_the_grace_keeps_its_session_on_the_revocation_feed_as_long() {
    // No leeway: the session's access_expires_at is then one second past the newest access
    // token's expiry, and a grace pair issued later than that second after the rotation shows
    // whether it moved.
    let app = spawn_with(&[
        "--refresh-token-reuse-grace-seconds",
        "60",
        "--jwt-leeway-seconds",
        "0",
    ])
    .await;
    let (_, login) = app.logged_in_user().await;
    let first = refresh_token(&login);
    assert_eq!(app.refresh(&first).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let graced: Value = app.refresh(&first).await.json().await.unwrap();
    let access = graced["access_token"].as_str().unwrap();
    let expires = claims(access)["exp"].as_f64().unwrap();

    let db = app.db().await;
    let covered_until: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM access_expires_at)::float8 FROM auth.sessions WHERE id = $1::uuid",
    )
    .bind(session_id(access))
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(
        covered_until >= expires,
        "the session leaves the feed at {covered_until}, before its graced token expires at {expires}"
    );
}

#[tokio::test]
async fn past_the_reuse_grace_a_reuse_revokes_the_session() {
    let app = spawn_with(&["--refresh-token-reuse-grace-seconds", "1"]).await;
    let (_, login) = app.logged_in_user().await;
    let first = refresh_token(&login);
    let second: Value = app.refresh(&first).await.json().await.unwrap();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_problem(app.refresh(&first).await, 401).await;
    // Reuse detected: the whole session is revoked, the successor with it.
    assert_problem(app.refresh(&refresh_token(&second)).await, 401).await;
    let metrics = common::test_metrics::scrape(&app.client, &app.admin).await;
    assert_eq!(
        common::test_metrics::sample(&metrics, "auth_refresh_reuse_detected_total"),
        1.0
    );
    assert_eq!(
        common::test_metrics::sample(&metrics, "auth_refresh_reuse_graced_total"),
        0.0
    );
}

#[tokio::test]
async fn a_session_ends_at_its_max_lifetime_however_often_it_is_refreshed() {
    let app = spawn_with(&["--session-max-lifetime-seconds", "4"]).await;
    let (_, login) = app.logged_in_user().await;
    assert!(login["expires_in"].as_u64().unwrap() <= 4, "{login}");

    let db = app.db().await;
    let lifetime: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM ends_at - created_at)::float8 FROM auth.sessions",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(lifetime, 4.0);
    let token_cap: bool = sqlx::query_scalar(
        "SELECT bool_and(t.expires_at <= s.ends_at) FROM auth.refresh_tokens t
         JOIN auth.sessions s ON s.id = t.session_id",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(token_cap, "no refresh token outlives its session");

    let refreshed = app.refresh(&refresh_token(&login)).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert!(refreshed["expires_in"].as_u64().unwrap() <= 4);

    // Wait until the session's end has passed (by the database's clock), then refresh.
    sqlx::query("SELECT pg_sleep(greatest(0, extract(epoch FROM (SELECT ends_at FROM auth.sessions) - now()) + 0.2))")
        .execute(&db)
        .await
        .unwrap();
    assert_problem(app.refresh(&refresh_token(&refreshed)).await, 401).await;
}

/// A session a release before the absolute lifetime started has no `ends_at`. It ends
/// SESSION_MAX_LIFETIME_SECONDS after its login too: refreshing it (or a racing tab's grace)
/// records that end instead of renewing it for ever.
#[tokio::test]
async fn a_session_started_before_ends_at_existed_still_ends_at_its_max_lifetime() {
    let app = spawn_with(&[
        "--session-max-lifetime-seconds",
        "3600",
        "--refresh-token-reuse-grace-seconds",
        "60",
    ])
    .await;
    let db = app.db().await;
    let as_before_the_column = |session: String, age_seconds: i64| {
        let db = db.clone();
        async move {
            sqlx::query(
                "UPDATE auth.sessions
                 SET ends_at = NULL, created_at = now() - make_interval(secs => $2)
                 WHERE id = $1::uuid",
            )
            .bind(session)
            .bind(age_seconds as f64)
            .execute(&db)
            .await
            .unwrap();
        }
    };

    // Younger than the lifetime: refreshed, and its end is now recorded from its login.
    let (_, young) = app.logged_in_user().await;
    let session = session_id(young["access_token"].as_str().unwrap());
    as_before_the_column(session.clone(), 600).await;
    let refreshed = app.refresh(&refresh_token(&young)).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert!(
        refreshed["expires_in"].as_u64().unwrap() <= 3000,
        "{refreshed}"
    );
    let recorded: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM ends_at - created_at)::float8 FROM auth.sessions
         WHERE id = $1::uuid",
    )
    .bind(&session)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(recorded, 3600.0);

    // Older than the lifetime: a refresh does not renew it...
    let (_, old) = app.logged_in_user().await;
    as_before_the_column(session_id(old["access_token"].as_str().unwrap()), 7200).await;
    assert_problem(app.refresh(&refresh_token(&old)).await, 401).await;
    // ...nor does a racing tab's grace (its token spent a moment ago, before the session aged).
    let (_, raced) = app.logged_in_user().await;
    let token = refresh_token(&raced);
    assert_eq!(app.refresh(&token).await.status(), 200);
    as_before_the_column(session_id(raced["access_token"].as_str().unwrap()), 7200).await;
    assert_problem(app.refresh(&token).await, 401).await;
}

/// Within the reuse grace, a tab that logs out with the token the other tab just spent logs the
/// session out (204), as a refresh with it would have been honoured: not a reuse detection.
#[tokio::test]
async fn within_the_reuse_grace_a_logout_with_the_spent_token_logs_out() {
    let app = spawn_with(&["--refresh-token-reuse-grace-seconds", "60"]).await;
    let (_, login) = app.logged_in_user().await;
    let spent = refresh_token(&login);
    let other_tab: Value = app.refresh(&spent).await.json().await.unwrap();
    assert_eq!(app.logout(&spent).await.status(), 204);
    // The session is over for both tabs.
    assert_problem(app.refresh(&refresh_token(&other_tab)).await, 401).await;
    let metrics = common::test_metrics::scrape(&app.client, &app.admin).await;
    assert_eq!(
        common::test_metrics::sample(&metrics, "auth_refresh_reuse_detected_total"),
        0.0
    );
}
