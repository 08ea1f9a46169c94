//! What both services' OpenAPI documents share: the bearer security scheme, and serving a
//! document with its Swagger UI from the binary (vendored assets, so it works offline).

use utoipa::Modify;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

use crate::problem::ProblemBody;

/// The answers every endpoint with a JSON body may give before its handler runs.
#[derive(utoipa::IntoResponses)]
pub enum BodyErrors {
    #[response(
        status = 413,
        description = "Body over 64 KiB",
        content_type = "application/problem+json"
    )]
    TooLarge(ProblemBody),
    #[response(
        status = 415,
        description = "Body is not JSON",
        content_type = "application/problem+json"
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

/// `<prefix>/openapi.json` and the Swagger UI at `<prefix>/docs`.
pub fn docs_routes<S: Clone + Send + Sync + 'static>(
    prefix: &str,
    document: utoipa::openapi::OpenApi,
) -> axum::Router<S> {
    SwaggerUi::new(format!("{prefix}/docs"))
        .url(format!("{prefix}/openapi.json"), document)
        .into()
}
