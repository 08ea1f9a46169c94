//! Conditional requests: every task answer carries a strong ETag that changes with the task;
//! `If-None-Match` on a read is a 304; `If-Match` on a write that does not match is a 412 and
//! changes nothing; of editors racing with one ETag exactly one wins; the list has a weak ETag;
//! `If-Match` on a read and `If-None-Match` on a write are evaluated too.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

fn etag(response: &reqwest::Response) -> String {
    response.headers()["etag"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_task_answer_has_a_strong_etag_that_changes_with_the_task() {
    let app = spawn_app().await;
    let user = app.user();
    let created = app.create(&user, json!({"title": "a"})).await;
    assert_eq!(created.status(), 201);
    let first = etag(&created);
    assert!(
        first.starts_with('"') && first.ends_with('"'),
        "strong: {first}"
    );
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/tasks/{id}");

    assert_eq!(etag(&app.get(&user, &path).await), first);
    // A write that changes nothing keeps it.
    let same = app
        .send(&user, Method::PUT, &path, json!({"title": "a"}))
        .await;
    assert_eq!(etag(&same), first);
    let renamed = app
        .send(&user, Method::PUT, &path, json!({"title": "b"}))
        .await;
    let second = etag(&renamed);
    assert_ne!(second, first);
    let completed = app
        .send(
            &user,
            Method::PATCH,
            &format!("{path}/complete"),
            json!({"completed": true}),
        )
        .await;
    let third = etag(&completed);
    assert!(third != second && third != first);
    assert_eq!(etag(&app.get(&user, &path).await), third);
}

#[tokio::test]
async fn if_none_match_on_a_read_is_304_without_a_body() {
    let app = spawn_app().await;
    let user = app.user();
    let created = app.create(&user, json!({"title": "cached"})).await;
    let tag = etag(&created);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/tasks/{id}");

    for header in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"999\", {tag}"),
        "*".into(),
    ] {
        let cached = app
            .send_with(
                &user,
                Method::GET,
                &path,
                None,
                &[("if-none-match", &header)],
            )
            .await;
        assert_eq!(cached.status(), 304, "{header}");
        assert_eq!(etag(&cached), tag);
        assert!(cached.bytes().await.unwrap().is_empty());
    }
    let stale = app
        .send_with(
            &user,
            Method::GET,
            &path,
            None,
            &[("if-none-match", "\"999\"")],
        )
        .await;
    assert_eq!(stale.status(), 200);
    // Someone else's task is still 404, whatever the header says.
    let stranger = app.user();
    let hidden = app
        .send_with(
            &stranger,
            Method::GET,
            &path,
            None,
            &[("if-none-match", "*")],
        )
        .await;
    assert_problem(hidden, 404).await;
}

#[tokio::test]
async fn a_write_whose_if_match_does_not_match_is_412_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.user();
    let created = app.create(&user, json!({"title": "shared"})).await;
    let tag = etag(&created);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/tasks/{id}");
    let stale = "\"999\"";

    let put = app
        .send_with(
            &user,
            Method::PUT,
            &path,
            Some(json!({"title": "lost"})),
            &[("if-match", stale)],
        )
        .await;
    let body = assert_problem(put, 412).await;
    assert!(body["detail"].as_str().unwrap().contains("If-Match"));
    let patch = app
        .send_with(
            &user,
            Method::PATCH,
            &format!("{path}/complete"),
            Some(json!({"completed": true})),
            &[("if-match", stale)],
        )
        .await;
    assert_problem(patch, 412).await;
    let weak = app
        .send_with(
            &user,
            Method::DELETE,
            &path,
            None,
            &[("if-match", &format!("W/{tag}"))],
        )
        .await;
    assert_problem(weak, 412).await;
    let unchanged: Value = app.get(&user, &path).await.json().await.unwrap();
    assert_eq!(unchanged["title"], "shared");
    assert_eq!(unchanged["completed"], false);

    // The current ETag, or `*`, lets the write through.
    let matched = app
        .send_with(
            &user,
            Method::PUT,
            &path,
            Some(json!({"title": "kept"})),
            &[("if-match", &tag)],
        )
        .await;
    assert_eq!(matched.status(), 200);
    let any = app
        .send_with(
            &user,
            Method::PATCH,
            &format!("{path}/complete"),
            Some(json!({"completed": true})),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(any.status(), 200);
    let now = etag(&any);
    let deleted = app
        .send_with(&user, Method::DELETE, &path, None, &[("if-match", &now)])
        .await;
    assert_eq!(deleted.status(), 200);
    // Gone: 404 with or without a condition.
    let gone = app
        .send_with(&user, Method::DELETE, &path, None, &[("if-match", &now)])
        .await;
    assert_problem(gone, 404).await;
}

#[tokio::test]
async fn of_editors_racing_with_one_etag_exactly_one_wins() {
    let app = spawn_app().await;
    let user = app.user();
    let created = app.create(&user, json!({"title": "contested"})).await;
    let tag = etag(&created);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/tasks/{id}");

    let answers = join_all((0..12).map(|n| {
        let (app, user, path, tag) = (&app, &user, &path, &tag);
        async move {
            app.send_with(
                user,
                Method::PUT,
                path,
                Some(json!({"title": format!("editor {n}")})),
                &[("if-match", tag)],
            )
            .await
            .status()
            .as_u16()
        }
    }))
    .await;
    assert_eq!(
        answers.iter().filter(|&&s| s == 200).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|&&s| s == 412).count(),
        11,
        "{answers:?}"
    );
}

#[tokio::test]
async fn the_list_has_a_weak_etag_that_changes_with_its_page() {
    let app = spawn_app().await;
    let user = app.user();
    for title in ["a", "b"] {
        app.task(&user, title).await;
    }
    let listed = app.get(&user, "/api/v1/tasks").await;
    let page = etag(&listed);
    assert!(page.starts_with("W/\""), "{page}");
    let cached = app
        .send_with(
            &user,
            Method::GET,
            "/api/v1/tasks",
            None,
            &[("if-none-match", &page)],
        )
        .await;
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().await.unwrap().is_empty());
    // Another filter is another page.
    assert_ne!(
        etag(&app.get(&user, "/api/v1/tasks?completed=false").await),
        page
    );

    let newest = app.task(&user, "c").await;
    let after_create = etag(&app.get(&user, "/api/v1/tasks").await);
    assert_ne!(after_create, page);
    app.send(
        &user,
        Method::PATCH,
        &format!("/api/v1/tasks/{}/complete", newest["id"]),
        json!({"completed": true}),
    )
    .await;
    let after_edit = app
        .send_with(
            &user,
            Method::GET,
            "/api/v1/tasks",
            None,
            &[("if-none-match", &after_create)],
        )
        .await;
    assert_eq!(after_edit.status(), 200, "an edit on the page changes it");
}

/// A page of an allowed origin can use what this API offers a browser: its preflight allows
/// the conditional and idempotency request headers, and the ETag and replay marker of an
/// answer are exposed to its scripts.
#[tokio::test]
async fn a_browser_page_of_an_allowed_origin_may_send_and_read_the_tasks_headers() {
    let origin = "https://app.example";
    let app = crate::helpers::spawn_app_with(&["--cors-allowed-origins", origin]).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/tasks/1"))
        .header("origin", origin)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization, content-type, if-match, if-none-match, idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert!(
        preflight.headers().contains_key("x-request-id"),
        "every answer has a request id, a preflight's too"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["if-match", "if-none-match", "idempotency-key"] {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }

    let user = app.user();
    let created = app
        .client
        .post(app.url("/api/v1/tasks"))
        .bearer_auth(&user.token)
        .header("origin", origin)
        .header("idempotency-key", "from-a-page")
        .json(&serde_json::json!({"title": "from a page"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let exposed = created.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "etag",
        "idempotent-replayed",
        "link",
        "retry-after",
        "x-request-id",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
}

/// RFC 9110 §13.1: the other two combinations. `If-Match` on a read that names no current ETag
/// is a 412; `If-None-Match` on a write that names the current ETag, or `*` (the task exists),
/// is a 412 and changes nothing, while one naming only other ETags lets the write through.
#[tokio::test]
async fn if_match_on_a_read_and_if_none_match_on_a_write_are_evaluated() {
    let app = spawn_app().await;
    let user = app.user();
    let created = app.create(&user, json!({"title": "a"})).await;
    let current = etag(&created);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/tasks/{id}");
    let read = |tag: &'static str| {
        let (app, user, path) = (&app, &user, &path);
        async move {
            app.send_with(user, Method::GET, path, None, &[("if-match", tag)])
                .await
        }
    };
    assert_problem(read("\"999\"").await, 412).await;
    assert_eq!(read("*").await.status(), 200);
    let at_current = app
        .send_with(&user, Method::GET, &path, None, &[("if-match", &current)])
        .await;
    assert_eq!(at_current.status(), 200);

    let rename = json!({"title": "b"});
    for tag in [current.as_str(), "*", "W/\"1\""] {
        let refused = app
            .send_with(
                &user,
                Method::PUT,
                &path,
                Some(rename.clone()),
                &[("if-none-match", tag)],
            )
            .await;
        assert_problem(refused, 412).await;
        let refused = app
            .send_with(
                &user,
                Method::DELETE,
                &path,
                None,
                &[("if-none-match", tag)],
            )
            .await;
        assert_problem(refused, 412).await;
    }
    let unchanged = app.get(&user, &path).await;
    assert_eq!(etag(&unchanged), current, "nothing changed");
    assert_eq!(unchanged.json::<Value>().await.unwrap()["title"], "a");

    let renamed = app
        .send_with(
            &user,
            Method::PUT,
            &path,
            Some(rename),
            &[("if-none-match", "\"999\"")],
        )
        .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(renamed.json::<Value>().await.unwrap()["title"], "b");
    // A task that is not there is a 404 whatever the header.
    let missing = app
        .send_with(
            &user,
            Method::DELETE,
            "/api/v1/tasks/999999999",
            None,
            &[("if-none-match", "*")],
        )
        .await;
    assert_problem(missing, 404).await;
}
