//! auth-service's errors and the problem each one becomes.

use axum::response::{IntoResponse, Response};
use common::Problem;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or invalid input: 400 with the reason.
    #[error("{0}")]
    Invalid(String),
    /// Unknown email or wrong password: one body for both, so neither is revealed.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Any refresh token that is not live: unknown, expired, spent, or of an ended session.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("the account no longer exists")]
    UnknownUser,
    /// The right password of an account an operator disabled.
    #[error("this account is disabled")]
    AccountDisabled,
    /// A signed-in user's password check (password change, account deletion) failed.
    #[error("the password is wrong")]
    WrongPassword,
    /// No live session of the caller has this id.
    #[error("no such session")]
    SessionNotFound,
    /// The hashing pool is saturated: retry in a second.
    #[error("too many password checks in progress")]
    HashingBusy,
    #[error("too many attempts")]
    RateLimited { retry_after_seconds: u64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Problem(#[from] Problem),
}

impl From<&Error> for Problem {
    fn from(error: &Error) -> Self {
        match error {
            Error::Invalid(reason) => Problem::bad_request(reason.clone()),
            Error::InvalidCredentials => Problem::unauthorized("invalid email or password"),
            Error::InvalidRefreshToken => Problem::invalid_token("invalid refresh token"),
            Error::UnknownUser => Problem::invalid_token("the account no longer exists"),
            Error::AccountDisabled => Problem::unauthorized("this account is disabled"),
            Error::WrongPassword => Problem::unauthorized("the password is wrong"),
            Error::SessionNotFound => Problem::not_found("no such session"),
            Error::EmailTaken => Problem::conflict("an account with this email already exists"),
            Error::HashingBusy => {
                Problem::unavailable("too many logins in progress; retry shortly", 1)
            }
            Error::RateLimited {
                retry_after_seconds,
            } => Problem::too_many_requests("too many attempts; retry later", *retry_after_seconds),
            Error::Database(error) => common::db::problem_for(error),
            Error::Problem(problem) => problem.clone(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(&self).into_response()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
