//! task-service's OpenAPI document and its Swagger UI (served from the binary, works offline).

use common::openapi::BearerAuth;
use utoipa::OpenApi;

use crate::tasks;

#[derive(OpenApi)]
#[openapi(
    info(title = "todo task-service", description = "Each user's todo tasks. Every call needs `Authorization: Bearer <access token>` from auth-service."),
    paths(tasks::list, tasks::create, tasks::read, tasks::update, tasks::complete, tasks::remove),
    components(schemas(common::problem::ProblemBody)),
    servers((url = "/", description = "The host that serves this document: every path carries its full `/api/v1/tasks` prefix")),
    modifiers(&BearerAuth),
    tags((name = "tasks", description = "Todo tasks"))
)]
pub struct ApiDoc;

/// The answers of every endpoint that names one task by id, besides its own.
#[derive(utoipa::IntoResponses)]
pub enum TaskAccessErrors {
    #[response(
        status = 401,
        description = "Missing or invalid access token",
        content_type = "application/problem+json",
        example = json!(common::openapi::problem_example(401, "invalid or expired access token"))
    )]
    Unauthorized(common::problem::ProblemBody),
    #[response(
        status = 404,
        description = "No such task, or another user's",
        content_type = "application/problem+json",
        example = json!(common::openapi::problem_example(404, "task not found"))
    )]
    NotFound(common::problem::ProblemBody),
}

/// `/api/v1/tasks/openapi.json` and the UI at `/api/v1/tasks/docs`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    common::openapi::docs_routes("/api/v1/tasks", ApiDoc::openapi())
}
