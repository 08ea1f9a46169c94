//! task-service's errors and the problem each one becomes.

use std::sync::Arc;

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
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A database error shared by every read of a coalesced batch.
    #[error(transparent)]
    SharedDatabase(Arc<sqlx::Error>),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match &self {
            Error::Invalid(reason) => Problem::unprocessable(reason.clone()),
            Error::NotFound => Problem::not_found("task not found"),
            Error::Database(error) => common::db::problem_for(error),
            Error::SharedDatabase(error) => common::db::problem_for(error),
        };
        problem.into_response()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
