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
    for path in [
        "register",
        "login",
        "refresh",
        "logout",
        "me",
        "password",
        "sessions",
        "sessions/{id}",
    ] {
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

#[tokio::test]
async fn every_error_response_in_the_document_has_its_own_example() {
    let app = spawn_app().await;
    let doc = app.openapi_doc().await;
    assert_eq!(
        common::openapi::problem_example_mismatches(&doc),
        Vec::<String>::new()
    );
    let example = |status: &str| {
        common::openapi::documented_example(&doc, "/api/v1/auth/login", "post", status)
    };
    assert_eq!(example("400")["status"], 400);
    assert_ne!(example("400"), example("401"));
    // The examples are what the service really answers.
    let bad_email = app
        .post(
            "/api/v1/auth/login",
            serde_json::json!({"email": "not-an-address", "password": "x"}),
        )
        .await;
    assert_eq!(bad_email.json::<Value>().await.unwrap(), example("400"));
    let unknown = app
        .post(
            "/api/v1/auth/login",
            serde_json::json!({"email": "nobody@example.com", "password": "wrong password"}),
        )
        .await;
    assert_eq!(unknown.json::<Value>().await.unwrap(), example("401"));
}

#[tokio::test]
async fn the_lifecycle_examples_are_what_the_service_answers() {
    let app = spawn_app().await;
    let doc = app.openapi_doc().await;
    let example = |path: &str, method: &str, status: &str| {
        common::openapi::documented_example(&doc, path, method, status)
    };
    let (_, login) = app.logged_in_user().await;
    let access = login["access_token"].as_str().unwrap();
    let answer =
        |response: reqwest::Response| async move { response.json::<Value>().await.unwrap() };

    let bad_id = app.end_session(access, "not-a-uuid").await;
    assert_eq!(
        answer(bad_id).await,
        example("/api/v1/auth/sessions/{id}", "delete", "400")
    );
    let unknown = app
        .end_session(access, &uuid::Uuid::new_v4().to_string())
        .await;
    assert_eq!(
        answer(unknown).await,
        example("/api/v1/auth/sessions/{id}", "delete", "404")
    );
    let wrong = app.delete_me(access, "not the password").await;
    assert_eq!(
        answer(wrong).await,
        example("/api/v1/auth/me", "delete", "401")
    );
    let wrong = app
        .change_password(access, "not the password", "a long enough one")
        .await;
    assert_eq!(
        answer(wrong).await,
        example("/api/v1/auth/password", "post", "401")
    );
    let short = app
        .change_password(access, crate::helpers::PASSWORD, "short")
        .await;
    assert_eq!(
        answer(short).await,
        example("/api/v1/auth/password", "post", "400")
    );
    let scope = app.logout_scope("everyone", Some(access)).await;
    assert_eq!(
        answer(scope).await,
        example("/api/v1/auth/logout", "post", "400")
    );
    let missing = app
        .call(
            reqwest::Method::DELETE,
            "/api/v1/auth/me",
            Some(access),
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(
        answer(missing).await,
        example("/api/v1/auth/me", "delete", "400")
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
        .get(app.url("/api/v1/auth/docs"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection(), "{response:?}");
    assert_eq!(response.headers()["location"], "/api/v1/auth/docs/");
}
