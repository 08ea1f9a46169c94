//! `Idempotency-Key` on `POST /api/v1/tasks`: retries answer what the first call answered and
//! create nothing; another body under the same key is a 422; concurrent requests with one key
//! create exactly one task.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, User, assert_problem, fresh_database, spawn_app, spawn_on};

async fn create_with_key(app: &TestApp, user: &User, key: &str, body: Value) -> reqwest::Response {
    app.send_with(
        user,
        Method::POST,
        "/api/v1/tasks",
        Some(body),
        &[("idempotency-key", key)],
    )
    .await
}

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_answers_the_first_answer() {
    let app = spawn_app().await;
    let user = app.user();
    let body = json!({"title": "Buy milk", "description": "two litres"});
    let first = create_with_key(&app, &user, "retry-1", body.clone()).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let etag = first.headers()["etag"].clone();
    let first: Value = first.json().await.unwrap();

    // Changed since: the replay is still the first answer, not the task as it is now.
    let changed = app
        .send(
            &user,
            Method::PUT,
            &format!("/api/v1/tasks/{}", first["id"]),
            json!({"title": "Buy oat milk"}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    for _ in 0..2 {
        let again = create_with_key(&app, &user, "retry-1", body.clone()).await;
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()["etag"], etag);
        assert_eq!(again.headers()["content-type"], "application/json");
        assert_eq!(again.json::<Value>().await.unwrap(), first);
    }
    assert_eq!(app.tasks_held(&user).await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_creates_nothing() {
    let app = spawn_app().await;
    let user = app.user();
    assert_eq!(
        create_with_key(&app, &user, "k", json!({"title": "one"}))
            .await
            .status(),
        201
    );
    let other = create_with_key(&app, &user, "k", json!({"title": "two"})).await;
    let body = assert_problem(other, 422).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("different request body"),
        "{body}"
    );
    let described = create_with_key(
        &app,
        &user,
        "k",
        json!({"title": "one", "description": "x"}),
    )
    .await;
    assert_problem(described, 422).await;
    assert_eq!(app.tasks_held(&user).await, 1);
}

#[tokio::test]
async fn keys_belong_to_their_user() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user(), app.user());
    let body = json!({"title": "same key"});
    let a: Value = create_with_key(&app, &alice, "shared", body.clone())
        .await
        .json()
        .await
        .unwrap();
    let b = create_with_key(&app, &bob, "shared", body).await;
    assert_eq!(b.status(), 201);
    assert!(b.headers().get("idempotent-replayed").is_none());
    let b: Value = b.json().await.unwrap();
    assert_ne!(a["id"], b["id"]);
    assert_eq!(b["user_id"], bob.id.to_string());
}

#[tokio::test]
async fn an_invalid_key_is_422() {
    let app = spawn_app().await;
    let user = app.user();
    let too_long = "k".repeat(256);
    for key in ["", "has space", "tab\tkey", too_long.as_str()] {
        let response = create_with_key(&app, &user, key, json!({"title": "x"})).await;
        let body = assert_problem(response, 422).await;
        assert!(
            body["detail"].as_str().unwrap().contains("Idempotency-Key"),
            "{key:?}: {body}"
        );
    }
    let longest = "k".repeat(255);
    assert_eq!(
        create_with_key(&app, &user, &longest, json!({"title": "x"}))
            .await
            .status(),
        201
    );
    let twice = app
        .client
        .post(app.url("/api/v1/tasks"))
        .bearer_auth(&user.token)
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(twice, 422).await;
    assert_eq!(app.tasks_held(&user).await, 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_exactly_one_task() {
    let database = fresh_database().await;
    // Two replicas, so the requests really race in the database, not in one process.
    let one = spawn_on(&database, &[]).await;
    let two = spawn_on(&database, &[]).await;
    let user = one.user();
    let body = json!({"title": "tapped twice"});
    let answers = join_all((0..16).map(|n| {
        let app = if n % 2 == 0 { &one } else { &two };
        create_with_key(app, &user, "double-tap", body.clone())
    }))
    .await;
    let mut ids = Vec::new();
    let mut replayed = 0;
    for answer in answers {
        assert_eq!(answer.status(), 201);
        if answer.headers().get("idempotent-replayed").is_some() {
            replayed += 1;
        }
        ids.push(answer.json::<Value>().await.unwrap()["id"].clone());
    }
    assert_eq!(replayed, 15, "one created, the others replayed");
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(one.tasks_held(&user).await, 1);
}

#[tokio::test]
async fn expired_keys_are_forgotten_and_cleaned_up() {
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--idempotency-key-ttl-seconds", "1"]).await;
    let user = app.user();
    let body = json!({"title": "again"});
    let first: Value = create_with_key(&app, &user, "short-lived", body.clone())
        .await
        .json()
        .await
        .unwrap();
    let db = app.db().await;
    // Wait until the key has expired by the database's clock.
    sqlx::query("SELECT pg_sleep(greatest(0, extract(epoch FROM (SELECT max(expires_at) FROM tasks.idempotency_keys) - now()) + 0.1))")
        .execute(&db)
        .await
        .unwrap();
    let second = create_with_key(&app, &user, "short-lived", body).await;
    assert_eq!(second.status(), 201);
    assert!(second.headers().get("idempotent-replayed").is_none());
    assert_ne!(second.json::<Value>().await.unwrap()["id"], first["id"]);

    // The cleanup deletes expired keys (through the expires_at index, in batches).
    sqlx::query("UPDATE tasks.idempotency_keys SET expires_at = now() - interval '1 hour'")
        .execute(&db)
        .await
        .unwrap();
    let deleted = task_service::tasks::idempotency::cleanup_once(
        &common::db::Db::connect_lazy(
            &common::db::DatabaseArgs {
                database_url: secrecy::SecretString::from(app.database_url.clone()),
                database_max_connections: 1,
                database_acquire_timeout_ms: 3000,
            },
            &prometheus::Registry::new(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(deleted, Some(1));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks.idempotency_keys")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// A keyed create is one transaction (the task and its key's record), run in a task of its own
/// to its end whatever becomes of the request: a request dropped between sending BEGIN or
/// COMMIT and reading the answer would otherwise leave its connection in the pool inside an
/// open transaction, for the next request's writes to ride along in. That window is too short
/// to hit from a test; a request that times out while its transaction waits for a lock is
/// dropped the same way, and shows the transaction going on: it commits once the lock goes, and
/// the client's retry with the key gets its answer.
#[tokio::test]
async fn a_keyed_create_whose_request_timed_out_commits_and_its_retry_replays() {
    let app = crate::helpers::spawn_app_with(&["--request-timeout-ms", "1000"]).await;
    let user = app.user();
    app.task(&user, "before").await;
    let db = app.db().await;
    let lock = crate::helpers::lock_the_table(&db).await;
    let body = json!({"title": "keyed"});
    let first = tokio::spawn(
        app.client
            .post(app.url("/api/v1/tasks"))
            .bearer_auth(&user.token)
            .header("idempotency-key", "timed-out-1")
            .json(&body)
            .send(),
    );
    crate::helpers::wait_for_statements_waiting_on_the_table(&db, 1).await;
    assert_eq!(first.await.unwrap().unwrap().status(), 503, "timed out");
    lock.rollback().await.unwrap();

    let committed = crate::helpers::eventually(std::time::Duration::from_secs(30), || async {
        app.tasks_held(&user).await >= 2
    });
    assert!(
        committed.await,
        "the timed-out request's transaction never committed"
    );
    let retry = create_with_key(&app, &user, "timed-out-1", body).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(
        crate::helpers::titles(&db, &user).await,
        ["before", "keyed"]
    );
}
