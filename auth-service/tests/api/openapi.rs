use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/auth/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in ["register", "login", "refresh", "logout", "me"] {
        assert!(
            paths.contains_key(&format!("/api/v1/auth/{path}")),
            "{path} missing"
        );
    }
    let register = &doc["paths"]["/api/v1/auth/register"]["post"]["responses"];
    for status in ["201", "400", "409", "413", "415", "429", "503"] {
        assert!(
            register.get(status).is_some(),
            "register documents {status}"
        );
    }
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/auth/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"));
    let script = app
        .client
        .get(app.url("/api/v1/auth/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.status(),
        200,
        "assets are vendored, not fetched from a CDN"
    );
}
