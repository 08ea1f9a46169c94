use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, User, assert_problem, spawn_app};

/// Inserts `n` tasks for `user` directly (fast), every third one completed.
async fn seed(app: &TestApp, user: &User, n: i64) {
    sqlx::query(
        "INSERT INTO tasks.tasks (user_id, title, completed)
         SELECT $1, 'task ' || i, i % 3 = 0 FROM generate_series(1, $2) AS i",
    )
    .bind(user.id)
    .bind(n)
    .execute(&app.db().await)
    .await
    .unwrap();
}

fn ids(tasks: &[Value]) -> Vec<i64> {
    tasks.iter().map(|t| t["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn the_list_is_the_callers_tasks_newest_first() {
    let app = spawn_app().await;
    let user = app.user();
    let other = app.user();
    let first = app.task(&user, "first").await;
    let second = app.task(&user, "second").await;
    app.task(&other, "not yours").await;
    let response = app.get(&user, "/api/v1/tasks").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("link").is_none(), "no next page");
    let tasks: Vec<Value> = response.json().await.unwrap();
    assert_eq!(tasks, vec![second, first]);
}

#[tokio::test]
async fn the_default_page_is_100_with_a_link_to_the_next() {
    let app = spawn_app().await;
    let user = app.user();
    seed(&app, &user, 150).await;
    let response = app.get(&user, "/api/v1/tasks").await;
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    let page: Vec<Value> = response.json().await.unwrap();
    assert_eq!(page.len(), 100);
    let last = page.last().unwrap()["id"].as_i64().unwrap();
    assert_eq!(
        link,
        format!("</api/v1/tasks?limit=100&after={last}>; rel=\"next\"")
    );
}

#[tokio::test]
async fn keyset_paging_walks_every_task_once_and_keeps_the_filter() {
    let app = spawn_app().await;
    let user = app.user();
    seed(&app, &user, 60).await;
    let mut path = "/api/v1/tasks?completed=true&limit=7".to_owned();
    let mut seen = Vec::new();
    loop {
        let response = app.get(&user, &path).await;
        assert_eq!(response.status(), 200);
        let next = response
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let page: Vec<Value> = response.json().await.unwrap();
        assert!(page.iter().all(|t| t["completed"] == true));
        seen.extend(ids(&page));
        match next {
            Some(link) => {
                assert!(link.contains("completed=true") && link.contains("limit=7"));
                path = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 20, "every third of 60 is completed");
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, no repeats");
    sorted.dedup();
    assert_eq!(sorted.len(), 20);
}

#[tokio::test]
async fn completed_filters_both_ways() {
    let app = spawn_app().await;
    let user = app.user();
    let done = app.task(&user, "done").await;
    let open = app.task(&user, "open").await;
    let path = format!("/api/v1/tasks/{}/complete", done["id"]);
    app.send(&user, Method::PATCH, &path, json!({"completed": true}))
        .await;
    let completed: Vec<Value> = app
        .get(&user, "/api/v1/tasks?completed=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&completed), vec![done["id"].as_i64().unwrap()]);
    let pending: Vec<Value> = app
        .get(&user, "/api/v1/tasks?completed=false")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&pending), vec![open["id"].as_i64().unwrap()]);
}

#[tokio::test]
async fn limit_may_be_1_to_500() {
    let app = spawn_app().await;
    let user = app.user();
    seed(&app, &user, 3).await;
    let one: Vec<Value> = app
        .get(&user, "/api/v1/tasks?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        app.get(&user, "/api/v1/tasks?limit=500").await.status(),
        200
    );
    for bad in [
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=abc",
        "completed=maybe",
        "after=x",
    ] {
        assert_problem(app.get(&user, &format!("/api/v1/tasks?{bad}")).await, 422).await;
    }
}
