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
    let doc: Value = app
        .client
        .get(app.url("/api/v1/tasks/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
