//! Sessions end everywhere: a logout at auth-service stops the session's access tokens here
//! within a bounded time, through the feed, without a call per request; and revocation fails
//! closed: a replica that has not read the feed is not ready and takes no bearer token, and one
//! that lost it keeps its list and turns unready past the maximum staleness.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem, eventually, fresh_database, log_in, spawn_auth, spawn_on,
    spawn_polling, start_auth, start_on,
};

#[tokio::test]
async fn a_logged_out_sessions_token_stops_working_within_seconds() {
    let database = fresh_database().await;
    let (auth_api, auth_admin) = spawn_auth(&database, &[]).await;
    let tasks = spawn_polling(&database, &auth_admin).await;

    let client = reqwest::Client::new();
    let login = log_in(&client, &auth_api).await;
    let access = login["access_token"].as_str().unwrap();
    let create = |title: &'static str| {
        client
            .post(tasks.url("/api/v1/tasks"))
            .bearer_auth(access)
            .json(&json!({"title": title}))
            .send()
    };
    assert_eq!(create("before logout").await.unwrap().status(), 201);

    // Before the logout is sent: a poll right after its commit is then within the elapsed time.
    let started = Instant::now();
    let logout = client
        .post(format!("{auth_api}/api/v1/auth/logout"))
        .json(&json!({"refresh_token": login["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    loop {
        let status = create("after logout").await.unwrap().status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 201);
        // A hang guard: the refusal itself shows the feed was read after the logout.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the ended session still works after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gauge is the time since the last successful poll: one made after the logout was sent.
    let metrics = common::test_metrics::scrape(&client, &tasks.admin).await;
    let age = common::test_metrics::sample(&metrics, "revocation_feed_age_seconds");
    assert!(
        age <= started.elapsed().as_secs_f64(),
        "the feed was last read {age} s ago, before the logout"
    );
}

/// An address nothing listens on (yet): a port the kernel just handed out, released again.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

async fn log_out(client: &reqwest::Client, auth_api: &str, login: &Value) {
    let logout = client
        .post(format!("{auth_api}/api/v1/auth/logout"))
        .json(&json!({"refresh_token": login["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
}

async fn create_with(tasks: &TestApp, login: &Value) -> reqwest::Response {
    tasks
        .client
        .post(tasks.url("/api/v1/tasks"))
        .bearer_auth(login["access_token"].as_str().unwrap())
        .json(&json!({"title": "a task"}))
        .send()
        .await
        .unwrap()
}

async fn feed_age(tasks: &TestApp) -> f64 {
    let metrics = common::test_metrics::scrape(&tasks.client, &tasks.admin).await;
    common::test_metrics::sample(&metrics, "revocation_feed_age_seconds")
}

/// Asserts `response` is the 503 a replica answers before its first read of the feed.
async fn assert_not_loaded_yet(response: reqwest::Response) {
    assert_eq!(response.headers()["retry-after"], "1");
    let body = assert_problem(response, 503).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("revoked-sessions"),
        "{body}"
    );
}

#[tokio::test]
async fn a_fresh_replica_with_the_feed_down_is_unready_and_takes_no_bearer_token() {
    let database = fresh_database().await;
    let feed = format!("http://127.0.0.1:{}", free_port());
    let tasks = start_on(
        &database,
        &["--auth-admin-url", &feed, "--revocation-poll-seconds", "1"],
    )
    .await;
    // Its own age gauge counts from the start: past two intervals, two polls have failed.
    let aged = eventually(Duration::from_secs(30), || async {
        feed_age(&tasks).await >= 2.0
    });
    assert!(aged.await, "the feed age does not grow");
    assert_eq!(
        tasks.readiness().await,
        (503, "revocation list not loaded yet".to_owned())
    );
    let user = tasks.user();
    assert_not_loaded_yet(tasks.get(&user, "/api/v1/tasks").await).await;
    // Without a valid token the list does not matter: still the usual 401.
    let anonymous = tasks
        .client
        .get(tasks.url("/api/v1/tasks"))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401).await;
}

#[tokio::test]
async fn once_the_feed_answers_a_fresh_replica_turns_ready_and_refuses_an_ended_session_at_once() {
    let database = fresh_database().await;
    let auth = start_auth(&database, &[]).await;
    let client = reqwest::Client::new();
    let ended = log_in(&client, &auth.api).await;
    let live = log_in(&client, &auth.api).await;
    log_out(&client, &auth.api, &ended).await;

    // A new task-service replica, pointed at an auth-service admin port that is not up yet.
    let port = free_port();
    let tasks = start_on(
        &database,
        &[
            "--auth-admin-url",
            &format!("http://127.0.0.1:{port}"),
            "--revocation-poll-seconds",
            "1",
        ],
    )
    .await;
    assert_eq!(
        tasks.readiness().await,
        (503, "revocation list not loaded yet".to_owned())
    );
    assert_not_loaded_yet(create_with(&tasks, &ended).await).await;

    // A second auth-service replica comes up there.
    let _second = start_auth(&database, &["--admin-addr", &format!("127.0.0.1:{port}")]).await;
    tasks.wait_for_readiness(200).await;
    let first = create_with(&tasks, &ended).await;
    let body = assert_problem(first, 401).await;
    assert_eq!(body["detail"], "the session has ended");
    assert_eq!(create_with(&tasks, &live).await.status(), 201);
}

#[tokio::test]
async fn a_replica_that_loses_the_feed_keeps_its_list_and_turns_unready_past_the_staleness_bound() {
    let database = fresh_database().await;
    let auth = start_auth(&database, &[]).await;
    let tasks = spawn_on(
        &database,
        &[
            "--auth-admin-url",
            &auth.admin,
            "--revocation-poll-seconds",
            "1",
            "--revocation-max-staleness-seconds",
            "2",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let ended = log_in(&client, &auth.api).await;
    let live = log_in(&client, &auth.api).await;
    log_out(&client, &auth.api, &ended).await;
    let refused = eventually(Duration::from_secs(30), || async {
        create_with(&tasks, &ended).await.status() == 401
    });
    assert!(refused.await, "the logout never reached task-service");

    // The feed goes away.
    auth.stop.cancel();
    auth.stopped.await.unwrap();
    let reason = tasks.wait_for_readiness(503).await;
    assert!(reason.starts_with("revocation list stale"), "{reason}");
    assert!(feed_age(&tasks).await >= 2.0);
    // The last list is kept: the ended session stays refused, the live one is still served
    // (to whoever reaches an unready pod directly; the Service no longer routes to it).
    assert_problem(create_with(&tasks, &ended).await, 401).await;
    assert_eq!(create_with(&tasks, &live).await.status(), 201);
}

#[tokio::test]
async fn the_first_poll_runs_at_start_not_after_an_interval() {
    let database = fresh_database().await;
    let (_, auth_admin) = spawn_auth(&database, &[]).await;
    // With a ten-minute interval, only a poll at start makes it ready within the hang guard.
    let tasks = spawn_on(
        &database,
        &[
            "--auth-admin-url",
            &auth_admin,
            "--revocation-poll-seconds",
            "600",
            "--revocation-max-staleness-seconds",
            "1200",
        ],
    )
    .await;
    assert_eq!(tasks.readiness().await, (200, "ready".to_owned()));
}

/// A revocation is stamped with its transaction's start but seen only when it commits. A logout
/// held up behind a lock commits late, with an old stamp, after the poller has already moved
/// its cursor past that stamp (here, by a later revocation: its stamp a minute ahead stands for
/// the half-minute of newer revocations that would move the cursor as far). The feed names the
/// oldest transaction still open as it is read, and the next poll reaches back to it, so the
/// late logout is seen all the same.
#[tokio::test]
async fn a_logout_that_commits_late_still_reaches_the_other_replicas() {
    let database = fresh_database().await;
    let (auth_api, auth_admin) = spawn_auth(&database, &[]).await;
    let tasks = spawn_polling(&database, &auth_admin).await;
    let client = reqwest::Client::new();
    let late = log_in(&client, &auth_api).await;
    let later = log_in(&client, &auth_api).await;
    let db = tasks.db().await;
    let session = |nth: i64| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>(
                "SELECT id FROM auth.sessions ORDER BY created_at OFFSET $1 LIMIT 1",
            )
            .bind(nth)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    let (late_session, later_session) = (session(0).await, session(1).await);

    // The first logout waits for a lock on its session row.
    let mut holding = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM auth.sessions WHERE id = $1 FOR UPDATE")
        .bind(late_session)
        .execute(&mut *holding)
        .await
        .unwrap();
    let logout = tokio::spawn({
        let (client, auth_api, late) = (client.clone(), auth_api.clone(), late.clone());
        async move { log_out(&client, &auth_api, &late).await }
    });
    crate::helpers::wait_for_lock_waits(&db, 1).await;
    // A later revocation commits meanwhile, and the poller sees it.
    sqlx::query(
        "UPDATE auth.sessions SET revoked_at = now() + interval '1 minute', revoked_reason = 'logout'
         WHERE id = $1",
    )
    .bind(later_session)
    .execute(&db)
    .await
    .unwrap();
    eventually_refused(&tasks, &later).await;

    holding.commit().await.unwrap();
    logout.await.unwrap();
    eventually_refused(&tasks, &late).await;
}

/// Waits until task-service refuses `login`'s access token (401); the 10 s bound is many polls.
async fn eventually_refused(tasks: &TestApp, login: &Value) {
    let refused = eventually(Duration::from_secs(10), || async {
        create_with(tasks, login).await.status() == 401
    });
    assert!(refused.await, "the revoked session's token still works");
}
