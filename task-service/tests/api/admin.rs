use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_readiness_and_metrics_are_on_the_admin_port() {
    let app = spawn_app().await;
    let user = app.user();
    app.task(&user, "counted").await;
    let get = |path: &str| app.client.get(format!("{}{path}", app.admin)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(text.contains("tasks_created_total 1"), "{text}");
    assert!(text.contains(
        r#"http_server_requests_total{method="POST",route="/api/v1/tasks",status="201"} 1"#
    ));
    assert!(text.contains(r#"build_info{service="task-service""#));
    // The API port does not serve metrics.
    let api = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(api.status(), 404);
}

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint() {
    let app = spawn_app().await;
    let doc = app.openapi_doc().await;
    let paths = &doc["paths"];
    assert!(paths["/api/v1/tasks"]["get"].is_object());
    assert!(paths["/api/v1/tasks"]["post"].is_object());
    for method in ["get", "put", "delete"] {
        assert!(paths["/api/v1/tasks/{id}"][method].is_object(), "{method}");
    }
    assert!(paths["/api/v1/tasks/{id}/complete"]["patch"].is_object());
    let docs = app
        .client
        .get(app.url("/api/v1/tasks/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
}

#[tokio::test]
async fn every_error_response_in_the_document_has_its_own_example() {
    let app = spawn_app().await;
    let doc = app.openapi_doc().await;
    assert_eq!(
        common::openapi::problem_example_mismatches(&doc),
        Vec::<String>::new()
    );
    let example = |path: &str, method: &str, status: &str| {
        common::openapi::documented_example(&doc, path, method, status)
    };
    // The examples are what the service really answers.
    let user = app.user();
    let missing: Value = app
        .get(&user, "/api/v1/tasks/999999")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(missing, example("/api/v1/tasks/{id}", "get", "404"));
    let blank: Value = app
        .create(&user, serde_json::json!({"title": "   "}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(blank, example("/api/v1/tasks", "post", "422"));

    let task = app.task(&user, "conditional").await;
    let path = format!("/api/v1/tasks/{}", task["id"]);
    let stale: Value = app
        .send_with(
            &user,
            reqwest::Method::PUT,
            &path,
            Some(serde_json::json!({"title": "x"})),
            &[("if-match", "\"999\"")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stale, example("/api/v1/tasks/{id}", "put", "412"));
    assert_eq!(stale, example("/api/v1/tasks/{id}", "delete", "412"));
}

#[tokio::test]
async fn the_cap_example_is_what_the_service_answers() {
    let database = crate::helpers::fresh_database().await;
    let app = crate::helpers::spawn_on(&database, &["--tasks-max-per-user", "10000"]).await;
    let doc = app.openapi_doc().await;
    let user = app.user();
    sqlx::query(
        "INSERT INTO tasks.tasks (user_id, title) SELECT $1, 't' || g FROM generate_series(1, 10000) g",
    )
    .bind(user.id)
    .execute(&app.db().await)
    .await
    .unwrap();
    let full: Value = app
        .create(&user, serde_json::json!({"title": "one more"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        full,
        doc["paths"]["/api/v1/tasks"]["post"]["responses"]["409"]["content"]["application/problem+json"]
            ["example"]
    );
}

#[tokio::test]
async fn the_docs_without_the_trailing_slash_redirect_to_the_ui() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(app.url("/api/v1/tasks/docs"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection(), "{response:?}");
    assert_eq!(response.headers()["location"], "/api/v1/tasks/docs/");
}

/// Every pooled connection busy (here, two updates waiting for a table lock on a pool of two)
/// is load, not a database that does not answer: readiness asks on a connection of its own and
/// stays 200, where a check queued behind the pool would time out and turn every replica of a
/// saturated service unready at once.
#[tokio::test]
async fn readiness_holds_while_every_pooled_connection_is_busy() {
    let app = crate::helpers::spawn_app_with(&["--database-max-connections", "2"]).await;
    let user = app.user();
    let mut ids = Vec::new();
    for title in ["one", "two"] {
        ids.push(app.task(&user, title).await["id"].as_i64().unwrap());
    }
    let db = app.db().await;
    let lock = crate::helpers::lock_the_table(&db).await;
    let updates: Vec<_> = ids
        .iter()
        .map(|id| {
            tokio::spawn(
                app.client
                    .put(app.url(&format!("/api/v1/tasks/{id}")))
                    .bearer_auth(&user.token)
                    .json(&serde_json::json!({"title": "renamed"}))
                    .send(),
            )
        })
        .collect();
    crate::helpers::wait_for_statements_waiting_on_the_table(&db, 2).await;
    let (status, reason) = app.readiness().await;
    assert_eq!(status, 200, "{reason}");
    lock.rollback().await.unwrap();
    for update in updates {
        assert_eq!(update.await.unwrap().unwrap().status(), 200);
    }
}
