//! The list's kept pages (`tasks::page_cache`): an unchanged page is answered from the body
//! kept, and any change (through this replica, another one, or SQL) is answered as it is now.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, User, spawn_app, spawn_app_with, spawn_on};

/// How many list pages this replica has answered, by where each came from.
#[derive(Debug, PartialEq)]
struct Answered {
    kept: f64,
    updated: f64,
    read: f64,
}

async fn answered(app: &TestApp) -> Answered {
    let page = |page: &str| format!(r#"task_list_pages_total{{page="{page}"}}"#);
    Answered {
        kept: app.metric(&page("kept")).await,
        updated: app.metric(&page("updated")).await,
        read: app.metric(&page("read")).await,
    }
}

/// The list at `path`: its body and its ETag.
async fn list(app: &TestApp, user: &User, path: &str) -> (Value, String) {
    let response = app.get(user, path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    (response.json().await.unwrap(), etag)
}

fn titles(page: &Value) -> Vec<&str> {
    page.as_array()
        .unwrap()
        .iter()
        .map(|task| task["title"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_unchanged_page_is_answered_again_and_a_change_made_elsewhere_is_seen() {
    let app = spawn_app().await;
    let user = app.user();
    let first = app.task(&user, "first").await;
    app.task(&user, "second").await;
    let (page, etag) = list(&app, &user, "/api/v1/tasks").await;
    assert_eq!(titles(&page), ["second", "first"]);
    let start = answered(&app).await;
    assert_eq!(start.read, 1.0);

    let (again, same_etag) = list(&app, &user, "/api/v1/tasks").await;
    assert_eq!((&again, &same_etag), (&page, &etag));
    let kept = answered(&app).await;
    assert_eq!((kept.kept, kept.updated, kept.read), (1.0, 0.0, 1.0));

    // Changes another replica, the purge or an operator would make: straight in SQL.
    let db = app.db().await;
    let id = first["id"].as_i64().unwrap();
    sqlx::query("UPDATE tasks.tasks SET title = 'renamed in SQL' WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    let (renamed, renamed_etag) = list(&app, &user, "/api/v1/tasks").await;
    assert_eq!(titles(&renamed), ["second", "renamed in SQL"]);
    assert_ne!(renamed_etag, etag);

    sqlx::query("INSERT INTO tasks.tasks (user_id, title) VALUES ($1, 'inserted in SQL')")
        .bind(user.id)
        .execute(&db)
        .await
        .unwrap();
    let (inserted, _) = list(&app, &user, "/api/v1/tasks").await;
    assert_eq!(
        titles(&inserted),
        ["inserted in SQL", "second", "renamed in SQL"]
    );

    sqlx::query("DELETE FROM tasks.tasks WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    let (deleted, _) = list(&app, &user, "/api/v1/tasks").await;
    assert_eq!(titles(&deleted), ["inserted in SQL", "second"]);
    assert_eq!(
        answered(&app).await.updated,
        3.0,
        "only the changed tasks read"
    );

    // A write of a timestamp alone (an operator's fix-up) moves the version too (migration
    // 0009), so the page shows it; and a write of the version cannot set it back.
    sqlx::query("UPDATE tasks.tasks SET updated_at = '2020-01-01T00:00:00Z' WHERE user_id = $1")
        .bind(user.id)
        .execute(&db)
        .await
        .unwrap();
    let (backdated, _) = list(&app, &user, "/api/v1/tasks").await;
    assert_eq!(backdated[0]["updated_at"], "2020-01-01T00:00:00.000000Z");
    assert_eq!(backdated[1]["updated_at"], "2020-01-01T00:00:00.000000Z");
    let version: i64 = sqlx::query_scalar(
        "UPDATE tasks.tasks SET version = 1 WHERE user_id = $1 RETURNING version",
    )
    .bind(user.id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(version > 2, "the version moved on, not back: {version}");
    let (deleted, _) = list(&app, &user, "/api/v1/tasks").await;
    assert_eq!(deleted, backdated);

    let end = answered(&app).await;
    assert_eq!((end.kept, end.updated, end.read), (1.0, 3.0, 3.0));

    // A write that changes nothing moves no version: the page is still the kept one.
    sqlx::query("UPDATE tasks.tasks SET title = title WHERE user_id = $1")
        .bind(user.id)
        .execute(&db)
        .await
        .unwrap();
    let (unchanged, _) = list(&app, &user, "/api/v1/tasks").await;
    assert_eq!(unchanged, deleted);
    assert_eq!(answered(&app).await.kept, 2.0);
}

#[tokio::test]
async fn a_write_through_this_replica_forgets_the_users_pages() {
    let app = spawn_app().await;
    let user = app.user();
    let task = app.task(&user, "task").await;
    let path = format!("/api/v1/tasks/{}", task["id"]);
    let writes: [(Method, String, Option<Value>, &str); 4] = [
        (
            Method::PUT,
            path.clone(),
            Some(json!({"title": "renamed"})),
            "renamed",
        ),
        (
            Method::PATCH,
            format!("{path}/complete"),
            Some(json!({"completed": true})),
            "renamed",
        ),
        (
            Method::POST,
            "/api/v1/tasks".into(),
            Some(json!({"title": "created"})),
            "created",
        ),
        (Method::DELETE, path.clone(), None, "created"),
    ];
    list(&app, &user, "/api/v1/tasks").await;
    for (n, (method, path, body, newest)) in writes.into_iter().enumerate() {
        let response = app.send_with(&user, method.clone(), &path, body, &[]).await;
        assert!(response.status().is_success(), "{method} {path}");
        let (page, _) = list(&app, &user, "/api/v1/tasks").await;
        assert_eq!(titles(&page)[0], newest, "after {method} {path}");
        // Read at once, not checked first: the write forgot the page.
        let counted = answered(&app).await;
        assert_eq!(
            (counted.kept, counted.updated, counted.read),
            (0.0, 0.0, 2.0 + n as f64),
            "after {method} {path}"
        );
    }
    let (page, _) = list(&app, &user, "/api/v1/tasks").await;
    assert_eq!(titles(&page), ["created"]);
    assert_eq!(page[0]["completed"], false);
    assert_eq!(answered(&app).await.kept, 1.0);
}

#[tokio::test]
async fn pages_are_kept_per_user_and_per_filter() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user(), app.user());
    app.task(&alice, "alice's").await;
    let done = app.task(&alice, "alice's done").await;
    app.send(
        &alice,
        Method::PATCH,
        &format!("/api/v1/tasks/{}/complete", done["id"]),
        json!({"completed": true}),
    )
    .await;
    app.task(&bob, "bob's").await;

    let paths = [
        "/api/v1/tasks",
        "/api/v1/tasks?completed=true",
        "/api/v1/tasks?completed=false",
        "/api/v1/tasks?limit=1",
    ];
    let expected: [&[&str]; 4] = [
        &["alice's done", "alice's"],
        &["alice's done"],
        &["alice's"],
        &["alice's done"],
    ];
    for round in 0..2 {
        for (path, expected) in paths.iter().zip(expected) {
            let (page, _) = list(&app, &alice, path).await;
            assert_eq!(titles(&page), expected, "{path}, round {round}");
        }
        let (page, _) = list(&app, &bob, "/api/v1/tasks").await;
        assert_eq!(titles(&page), ["bob's"], "round {round}");
        // An empty page is a page too, and another user's empty page is not it.
        let (page, _) = list(&app, &bob, "/api/v1/tasks?completed=true").await;
        assert_eq!(page, json!([]), "round {round}");
    }
    let counted = answered(&app).await;
    assert_eq!(
        (counted.kept, counted.updated, counted.read),
        (6.0, 0.0, 6.0)
    );
}

#[tokio::test]
async fn with_no_memory_for_pages_every_list_reads_its_rows() {
    let app = spawn_app_with(&["--list-cache-max-bytes", "0"]).await;
    let user = app.user();
    app.task(&user, "task").await;
    for _ in 0..3 {
        let (page, _) = list(&app, &user, "/api/v1/tasks").await;
        assert_eq!(titles(&page), ["task"]);
    }
    let counted = answered(&app).await;
    assert_eq!(
        (counted.kept, counted.updated, counted.read),
        (0.0, 0.0, 3.0)
    );
}

#[tokio::test]
async fn a_changed_page_is_byte_for_byte_what_a_replica_without_pages_answers() {
    let app = spawn_app().await;
    let plain = spawn_on(&app.database_url, &["--list-cache-max-bytes", "0"]).await;
    let user = app.user();
    let db = app.db().await;
    sqlx::query(
        "INSERT INTO tasks.tasks (user_id, title, description)
         SELECT $1, 'task ' || i, 'about ' || i FROM generate_series(1, 30) AS i",
    )
    .bind(user.id)
    .execute(&db)
    .await
    .unwrap();
    let path = "/api/v1/tasks?limit=20";
    let body = |app: &TestApp| {
        let request = app.client.get(app.url(path)).bearer_auth(&user.token);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let etag = response.headers()["etag"].clone();
            (response.bytes().await.unwrap(), etag)
        }
    };
    body(&app).await;
    // Each change touches a few tasks of the kept page (which then keeps the others' JSON),
    // or most of it (read whole), or moves tasks onto and off it.
    let changes = [
        "UPDATE tasks.tasks SET title = 'renamed' WHERE user_id = $1 AND id % 7 = 0",
        "UPDATE tasks.tasks SET completed = true, description = NULL WHERE user_id = $1 AND id % 5 = 1",
        "UPDATE tasks.tasks SET description = 'all of them' WHERE user_id = $1",
        "DELETE FROM tasks.tasks WHERE user_id = $1 AND id % 9 = 2",
        "INSERT INTO tasks.tasks (user_id, title) VALUES ($1, 'newest')",
        r#"UPDATE tasks.tasks SET title = 'quote " and \ and é' WHERE user_id = $1 AND id % 4 = 3"#,
    ];
    for change in changes {
        sqlx::query(change)
            .bind(user.id)
            .execute(&db)
            .await
            .unwrap();
        let (kept, kept_etag) = body(&app).await;
        let (read, read_etag) = body(&plain).await;
        assert_eq!(kept, read, "after {change}");
        assert_eq!(kept_etag, read_etag, "after {change}");
    }
    let counted = answered(&app).await;
    assert_eq!(
        (counted.kept, counted.updated, counted.read),
        (0.0, 5.0, 2.0),
        "every change but the one to all the descriptions left most of the page as it was"
    );
    plain.shut_down().await;
}
