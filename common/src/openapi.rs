//! What both services' OpenAPI documents share: the bearer security scheme, and serving a
//! document with its Swagger UI from the binary (vendored assets, so it works offline).

use utoipa::Modify;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

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
