//! The caller's sessions: `GET /sessions` lists the live ones, `DELETE /sessions/{id}` ends one.

use axum::extract::State;
use axum::http::StatusCode;
use common::auth::AuthUser;
use common::db::run_to_completion;
use common::extract::Path;
use uuid::Uuid;

use super::store::{self, Reason, SessionView};
use crate::AppState;
use crate::error::{Error, Result};

/// The caller's live sessions: their own first, then the newest (at most 500).
#[utoipa::path(
    get,
    path = "/api/v1/auth/sessions",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Live sessions; `current` is true on the caller's", body = Vec<SessionView>),
        (status = 401, description = "Missing, invalid or expired access token, or ended session", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "invalid or expired access token"))),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<axum::Json<Vec<SessionView>>> {
    let mut conn = state.db.acquire().await?;
    let max = state.lifetimes.session_max_seconds;
    let sessions = store::list(&mut conn, caller.user_id, caller.session_id, max).await?;
    Ok(axum::Json(sessions))
}

/// Ends one of the caller's sessions, on every service.
#[utoipa::path(
    delete,
    path = "/api/v1/auth/sessions/{id}",
    tag = "auth",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A session id from `GET /sessions`")),
    responses(
        (status = 204, description = "Ended: its refresh token is dead and its access tokens are refused within the revocation poll"),
        (status = 400, description = "The id is not a UUID", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "Invalid URL: Cannot parse `id` with value `not-a-uuid`: UUID parsing failed: invalid character: found `n` at 0"))),
        (status = 401, description = "Missing, invalid or expired access token, or ended session", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "invalid or expired access token"))),
        (status = 404, description = "No live session of the caller has this id (unknown, ended, or another user's)", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(404, "no such session"))),
    )
)]
pub async fn end(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    let (db, max) = (state.db.clone(), state.lifetimes.session_max_seconds);
    let revoked = run_to_completion(async move {
        let mut conn = db.acquire().await?;
        store::revoke_one(&mut conn, caller.user_id, id, Reason::EndedByUser, max).await
    })
    .await?
    .ok_or(Error::SessionNotFound)?;
    tracing::info!(user_id = %caller.user_id, session_id = %caller.session_id, ended_session_id = %id, "session ended by its user");
    state.revoke_locally([revoked]);
    Ok(StatusCode::NO_CONTENT)
}
