//! auth-service's OpenAPI document and its Swagger UI (served from the binary, works offline).

use common::openapi::BearerAuth;
use utoipa::{OpenApi, ToSchema};

use crate::{account, sessions, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "todo auth-service", description = "Registration, login, token refresh and logout; the account lifecycle (a new password, sessions, deletion)."),
    paths(
        users::register,
        users::me,
        sessions::login,
        sessions::refresh,
        sessions::logout::logout,
        sessions::listing::list,
        sessions::listing::end,
        account::change_password,
        account::delete_me,
    ),
    components(schemas(common::problem::ProblemBody)),
    servers((url = "/", description = "The host that serves this document: every path carries its full `/api/v1/auth` prefix")),
    modifiers(&BearerAuth),
    tags((name = "auth", description = "Accounts and sessions"))
)]
pub struct ApiDoc;

/// The body of `POST /register` as documented; the handler reads it as `users::Credentials`.
/// JSON Schema counts characters, so "at most 72 bytes" shows as 72 characters plus a note.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RegisterRequest {
    /// A valid address of at most 254 bytes; surrounding whitespace is trimmed.
    #[schema(format = Email, max_length = 254, example = "alice@example.com")]
    email: String,
    /// 8 or more characters, at most 72 bytes (bcrypt's limit; longer is refused, never
    /// truncated), no U+0000.
    #[schema(format = Password, min_length = 8, max_length = 72, pattern = r"^[^\u0000]*$", example = "correct horse battery")]
    password: String,
}

/// The body of `POST /login` as documented; the handler reads it as `users::Credentials`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    /// A valid address of at most 254 bytes; surrounding whitespace is trimmed.
    #[schema(format = Email, max_length = 254, example = "alice@example.com")]
    email: String,
    /// 1 to 72 bytes, no U+0000.
    #[schema(format = Password, min_length = 1, max_length = 72, pattern = r"^[^\u0000]*$", example = "correct horse battery")]
    password: String,
}

/// `/api/v1/auth/openapi.json` and the UI at `/api/v1/auth/docs`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    common::openapi::docs_routes("/api/v1/auth", ApiDoc::openapi())
}
