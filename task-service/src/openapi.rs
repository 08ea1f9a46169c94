//! task-service's OpenAPI document and its Swagger UI (served from the binary, works offline).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::tasks;

#[derive(OpenApi)]
#[openapi(
    info(title = "todo task-service", description = "Each user's todo tasks. Every call needs `Authorization: Bearer <access token>` from auth-service."),
    paths(tasks::list, tasks::create, tasks::read, tasks::update, tasks::complete, tasks::remove),
    components(schemas(common::problem::ProblemBody)),
    modifiers(&BearerAuth),
    tags((name = "tasks", description = "Todo tasks"))
)]
pub struct ApiDoc;

struct BearerAuth;

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

/// `/api/v1/tasks/openapi.json` and the UI at `/api/v1/tasks/docs`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    SwaggerUi::new("/api/v1/tasks/docs")
        .url("/api/v1/tasks/openapi.json", ApiDoc::openapi())
        .into()
}
