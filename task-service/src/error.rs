//! task-service's errors and the problem each one becomes.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::Problem;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input: 422 with the reason.
    #[error("{0}")]
    Invalid(String),
    /// Missing, or another user's: the two are indistinguishable on purpose.
    #[error("task not found")]
    NotFound,
    /// `If-Match` named no version the task is at: nothing was changed.
    #[error("the task has changed since that ETag")]
    PreconditionFailed,
    /// A write's `If-None-Match` named the task's current ETag, or `*` (or the task changed
    /// while it was checked): nothing was changed.
    #[error("If-None-Match matched the task")]
    NoneMatchFailed,
    /// The user holds TASKS_MAX_PER_USER tasks already.
    #[error("task limit reached")]
    TooManyTasks { max: i32 },
    /// The `Idempotency-Key` was first used with another body.
    #[error("Idempotency-Key reused with another request body")]
    IdempotencyKeyReused,
    /// A transient state the client should simply retry: 503 with `Retry-After: 1`.
    #[error("{0}")]
    RetryNow(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A database error shared by every request of a coalesced batch (`tasks::coalesce`).
    #[error(transparent)]
    SharedDatabase(Arc<sqlx::Error>),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match &self {
            Error::Invalid(reason) => Problem::unprocessable(reason.clone()),
            Error::NotFound => Problem::not_found("task not found"),
            Error::PreconditionFailed => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "the task has changed since the ETag in If-Match; GET it again",
            ),
            Error::NoneMatchFailed => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "If-None-Match names the task's current ETag (or is *), or the task changed while it was checked: nothing changed",
            ),
            Error::TooManyTasks { max } => Problem::conflict(format!(
                "a user holds at most {max} tasks (TASKS_MAX_PER_USER); delete some to make room"
            )),
            Error::IdempotencyKeyReused => Problem::unprocessable(
                "this Idempotency-Key was used with a different request body; use a new key for a new request",
            ),
            Error::RetryNow(reason) => Problem::unavailable(*reason, 1),
            Error::Database(error) => common::db::problem_for(error),
            Error::SharedDatabase(error) => common::db::problem_for(error),
        };
        problem.into_response()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
