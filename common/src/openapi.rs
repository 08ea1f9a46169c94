//! What both services' OpenAPI documents share: the bearer security scheme, the answers every
//! JSON endpoint may give, an example body per error response, and serving a document with its
//! Swagger UI from the binary (vendored assets, so it works offline).

use axum::http::StatusCode;
use utoipa::Modify;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

use crate::Problem;
use crate::problem::ProblemBody;

/// The example of one documented error response: the body the service really sends for
/// `status` with `detail`, built by the same code that builds real answers. Each response names
/// its own (`example = json!(common::openapi::problem_example(400, "…"))`), so Swagger UI
/// shows login's 400 as a 400, not one shared example for every error.
pub fn problem_example(status: u16, detail: &str) -> ProblemBody {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Problem::new(status, detail).body()
}

/// The answers every endpoint with a JSON body may give before its handler runs.
#[derive(utoipa::IntoResponses)]
pub enum BodyErrors {
    #[response(
        status = 413,
        description = "Body over 64 KiB",
        content_type = "application/problem+json",
        example = json!(problem_example(413, "the request body is larger than the limit"))
    )]
    TooLarge(ProblemBody),
    #[response(
        status = 415,
        description = "Body is not JSON",
        content_type = "application/problem+json",
        example = json!(problem_example(415, "expected a request body with Content-Type: application/json"))
    )]
    NotJson(ProblemBody),
}

/// Adds the `bearer` (JWT) security scheme that protected paths name.
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `<prefix>/openapi.json` and the Swagger UI at `<prefix>/docs/`; `<prefix>/docs` without the
/// slash redirects there (the page loads its assets relative to its own URL).
pub fn docs_routes<S: Clone + Send + Sync + 'static>(
    prefix: &str,
    document: utoipa::openapi::OpenApi,
) -> axum::Router<S> {
    SwaggerUi::new(format!("{prefix}/docs"))
        .url(format!("{prefix}/openapi.json"), document)
        .into()
}

/// The problem+json example `document` gives for `status` of `method path` (`Null` if none): what
/// a test compares the service's real answer with.
#[cfg(feature = "test-support")]
pub fn documented_example(
    document: &serde_json::Value,
    path: &str,
    method: &str,
    status: &str,
) -> serde_json::Value {
    document["paths"][path][method]["responses"][status]["content"]["application/problem+json"]
        ["example"]
        .clone()
}

/// Every problem+json response in `document` (an OpenAPI document as JSON) whose example is
/// missing or does not match its own status code, as `"<method> <path> <status>: <why>"`.
#[cfg(feature = "test-support")]
pub fn problem_example_mismatches(document: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    let paths = document["paths"].as_object().into_iter().flatten();
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().into_iter().flatten() {
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                let Some(content) = response["content"].get(crate::problem::PROBLEM_JSON) else {
                    continue;
                };
                let at = format!("{method} {path} {status}");
                let example = &content["example"];
                let code = status.parse::<u16>().ok();
                let expected_title = code
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .and_then(|s| s.canonical_reason());
                if example.is_null() {
                    found.push(format!("{at}: no example"));
                } else if example["status"].as_u64() != code.map(u64::from) {
                    found.push(format!("{at}: example has status {}", example["status"]));
                } else if example["title"].as_str() != expected_title {
                    found.push(format!("{at}: example has title {}", example["title"]));
                } else if example["detail"].as_str().is_none_or(str::is_empty) {
                    found.push(format!("{at}: example has no detail"));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_example_is_the_body_the_service_sends() {
        let example = serde_json::to_value(problem_example(404, "task not found")).unwrap();
        let real = serde_json::to_value(Problem::not_found("task not found").body()).unwrap();
        assert_eq!(example, real);
    }

    #[cfg(feature = "test-support")]
    #[test]
    fn a_response_without_its_own_example_is_reported() {
        let document = serde_json::json!({"paths": {"/x": {"post": {"responses": {
            "400": {"content": {"application/problem+json": {"example": {
                "type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "no"}}}},
            "409": {"content": {"application/problem+json": {}}},
            "422": {"content": {"application/problem+json": {"example":
                problem_example(422, "title must not be empty")}}},
        }}}}});
        assert_eq!(
            problem_example_mismatches(&document),
            [
                "post /x 400: example has status 401",
                "post /x 409: no example"
            ]
        );
    }
}
