//! auth-service's OpenAPI document and its Swagger UI (served from the binary, works offline).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::{sessions, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "todo auth-service", description = "Registration, login, token refresh and logout."),
    paths(users::register, users::me, sessions::login, sessions::refresh, sessions::logout),
    components(schemas(common::problem::ProblemBody)),
    modifiers(&BearerAuth),
    tags((name = "auth", description = "Accounts and sessions"))
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

/// `/api/v1/auth/openapi.json` and the UI at `/api/v1/auth/docs`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    SwaggerUi::new("/api/v1/auth/docs")
        .url("/api/v1/auth/openapi.json", ApiDoc::openapi())
        .into()
}
