//! The signed-in user's account: a new password (`POST /password`) and deletion
//! (`DELETE /me`). Both prove the current password through the same limits as a login.

pub mod store;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::auth::AuthUser;
use common::db::{Db, run_to_completion};
use common::extract::Json;
use common::revocation::RevokedSession;
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::client_ip::ClientIp;
use crate::credentials::{self, Claimant};
use crate::error::{Error, Result};
use crate::sessions::{TokenPair, client_info, token_response};
use crate::users::{self, Password};

/// `POST /password`; `DELETE /me` is routed with `GET /me` (`users::router`).
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/auth/password", post(change_password))
}

#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password the account has now.
    #[schema(value_type = String, format = Password, min_length = 1, max_length = 72, example = "correct horse battery")]
    pub current_password: SecretString,
    /// The register rules: 8 or more characters, at most 72 bytes, no U+0000.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 72, example = "staple battery horse correct")]
    pub new_password: SecretString,
}

#[derive(Deserialize, ToSchema)]
pub struct AccountDeletion {
    /// The account's password, proven once more before it is deleted.
    #[schema(value_type = String, format = Password, min_length = 1, max_length = 72, example = "correct horse battery")]
    pub password: SecretString,
}

/// A wrong password of a signed-in user says so: the email is not in question.
fn wrong_password(error: Error) -> Error {
    match error {
        Error::InvalidCredentials => Error::WrongPassword,
        other => other,
    }
}

/// Sets a new password.
///
/// Every session of the user ends, the caller's too, on both services; the answer is the token
/// pair of a new session.
#[utoipa::path(
    post,
    path = "/api/v1/auth/password",
    tag = "auth",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed: a token pair of a new session; every older session has ended", body = TokenPair),
        (status = 400, description = "Malformed body, or a new password outside 8 characters..72 bytes", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "new_password must be at least 8 characters"))),
        (status = 401, description = "Wrong current password (counted as a failed login), or a missing, invalid or ended access token", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "the password is wrong"))),
        common::openapi::BodyErrors,
        (status = 429, description = "Too many attempts from this client, or too many failed logins for this account; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(429, "too many attempts; retry later"))),
        (status = 503, description = "Password hashing saturated; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(503, "too many logins in progress; retry shortly"))),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    caller: AuthUser,
    headers: HeaderMap,
    Json(body): Json<PasswordChange>,
) -> Result<impl IntoResponse> {
    let current = Password::for_login(body.current_password)
        .map_err(|reason| Error::Invalid(format!("current_{reason}")))?;
    let new = Password::for_registration(body.new_password)
        .map_err(|reason| Error::Invalid(format!("new_{reason}")))?;
    let check = || {
        credentials::check_password(
            &state,
            client_ip,
            Claimant::User(caller.user_id),
            current.clone(),
        )
    };
    let mut account = check().await.map_err(wrong_password)?;
    let new_hash = state
        .hasher
        .hash(new.into_secret())
        .await
        .map_err(users::hash_error)?;
    let client = client_info(client_ip, &headers);
    let user = account.id;
    // As at login (`sessions::log_in`): an account found changed since the check (a rehash of
    // the same password is such a change) has the current password checked once more.
    let mut rechecked = false;
    let (revoked, started) = loop {
        let (db, lifetimes) = (state.db.clone(), state.lifetimes);
        let (checked_hash, new_hash, client) = (
            account.password_hash.clone(),
            new_hash.clone(),
            client.clone(),
        );
        let changed = run_to_completion(async move {
            let mut tx = db.begin().await?;
            let changed =
                store::change_password(&mut tx, user, &checked_hash, &new_hash, &client, lifetimes)
                    .await?;
            if changed.is_some() {
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(changed)
        })
        .await?;
        match changed {
            Some(changed) => break changed,
            None if !rechecked => {
                rechecked = true;
                account = check().await.map_err(wrong_password)?;
            }
            // The password (or the account) changed while this request was checking it.
            None => return Err(Error::WrongPassword),
        }
    };
    state
        .metrics
        .account_changes
        .with_label_values(&["password_changed"])
        .inc();
    tracing::info!(user_id = %user, session_id = %started.session_id, ended = revoked.len(), %client_ip, "password changed; every other session ended");
    state.revoke_locally(revoked);
    Ok(token_response(state.token_pair(
        user,
        started.session_id,
        started.refresh_token,
        Some(started.ends_at),
    )))
}

/// Deletes the caller's account.
///
/// Every session ends, task-service purges the account's tasks, and the email can register
/// again (as a new user).
#[utoipa::path(
    delete,
    path = "/api/v1/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    request_body = AccountDeletion,
    responses(
        (status = 204, description = "Deleted; task-service purges the account's tasks within its poll"),
        (status = 400, description = "Malformed body", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "Failed to deserialize the JSON body into the target type: missing field `password` at line 1 column 2"))),
        (status = 401, description = "Wrong password (counted as a failed login), or a missing, invalid or ended access token", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "the password is wrong"))),
        common::openapi::BodyErrors,
        (status = 429, description = "Too many attempts from this client, or too many failed logins for this account; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(429, "too many attempts; retry later"))),
        (status = 503, description = "Password hashing saturated; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(503, "too many logins in progress; retry shortly"))),
    )
)]
pub async fn delete_me(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    caller: AuthUser,
    Json(body): Json<AccountDeletion>,
) -> Result<StatusCode> {
    let password = Password::for_login(body.password).map_err(Error::Invalid)?;
    credentials::check_password(&state, client_ip, Claimant::User(caller.user_id), password)
        .await
        .map_err(wrong_password)?;
    let revoked = delete_account(&state.db, caller.user_id)
        .await?
        .ok_or(Error::UnknownUser)?;
    state
        .metrics
        .account_changes
        .with_label_values(&["deleted"])
        .inc();
    tracing::info!(user_id = %caller.user_id, ended = revoked.len(), %client_ip, "account deleted");
    state.revoke_locally(revoked);
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes `user` in one transaction (`store::delete`); `None` when there is no such user.
/// `DELETE /me` and `auth-service users delete` both delete this way.
pub async fn delete_account(db: &Db, user: Uuid) -> Result<Option<Vec<RevokedSession>>> {
    let db = db.clone();
    let deleted = run_to_completion(async move {
        let mut tx = db.begin().await?;
        let deleted = store::delete(&mut tx, user).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(deleted)
    })
    .await?;
    Ok(deleted)
}
