//! Users: registration and `/me`. Owns `auth.users` (the lifecycle's changes to it are in
//! `account`).

pub mod email;
pub mod password;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use common::auth::AuthUser;
use common::extract::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::client_ip::ClientIp;
use crate::error::{Error, Result};
use crate::hashing::HashError;
pub use email::Email;
pub use password::Password;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        // Deleting the account is `account`'s: one path, one method router.
        .route("/api/v1/auth/me", get(me).delete(crate::account::delete_me))
}

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(example = "alice@example.com")]
    pub email: String,
    /// 8 or more characters and at most 72 bytes at registration; 1..=72 bytes at login.
    #[schema(value_type = String, format = Password, example = "correct horse battery")]
    pub password: SecretString,
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    #[schema(example = "User created successfully")]
    pub message: &'static str,
    pub id: Uuid,
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    #[serde(serialize_with = "common::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// Creates an account.
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    security(),
    request_body = crate::openapi::RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = Registered),
        (status = 400, description = "Malformed body, invalid email, or password outside 8 characters..72 bytes", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "password must be at least 8 characters"))),
        (status = 409, description = "An account with this email exists", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(409, "an account with this email already exists"))),
        common::openapi::BodyErrors,
        (status = 429, description = "Too many registrations from this client", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(429, "too many attempts; retry later"))),
        (status = 503, description = "Hashing or database saturated; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(503, "too many logins in progress; retry shortly"))),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(body): Json<Credentials>,
) -> Result<(StatusCode, axum::Json<Registered>)> {
    let email = Email::parse(&body.email).map_err(Error::Invalid)?;
    let password = Password::for_registration(body.password).map_err(Error::Invalid)?;
    let limits = &state.limits;
    let outcome = match limits
        .hit(
            &state.db,
            limits.register_per_ip,
            &limits.client_key(client_ip),
        )
        .await
    {
        Ok(()) => create_user(&state, &email, password).await,
        Err(error) => Err(error),
    };
    let label = match &outcome {
        Ok(_) => "created",
        Err(Error::EmailTaken) => "email_taken",
        Err(Error::HashingBusy) => "busy",
        Err(Error::RateLimited { .. }) => "rate_limited",
        Err(_) => "error",
    };
    state
        .metrics
        .registrations
        .with_label_values(&[label])
        .inc();
    let id = outcome?;
    tracing::info!(user_id = %id, "user registered");
    Ok((
        StatusCode::CREATED,
        axum::Json(Registered {
            message: "User created successfully",
            id,
            email: email.to_string(),
        }),
    ))
}

async fn create_user(state: &AppState, email: &Email, password: Password) -> Result<Uuid> {
    let hash = state
        .hasher
        .hash(password.into_secret())
        .await
        .map_err(hash_error)?;
    let id = Uuid::new_v4();
    let mut conn = state.db.acquire().await?;
    let inserted = sqlx::query!(
        "INSERT INTO auth.users (id, email, password_hash) VALUES ($1, $2, $3)",
        id,
        email.as_str(),
        hash
    )
    .execute(&mut *conn)
    .instrument(common::db_span!("db.users.insert", "INSERT"))
    .await;
    match inserted {
        Ok(_) => Ok(id),
        Err(e) if common::db::is_unique_violation(&e, "users_email_key") => Err(Error::EmailTaken),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn hash_error(error: HashError) -> Error {
    match error {
        HashError::Busy => Error::HashingBusy,
        HashError::Bcrypt(reason) => {
            tracing::error!(%reason, "bcrypt failed");
            Error::Problem(common::Problem::internal())
        }
    }
}

/// The caller's account.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account of the access token's user", body = Me),
        (status = 401, description = "Missing, invalid or expired access token, or ended session", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "invalid or expired access token"))),
    )
)]
pub async fn me(State(state): State<AppState>, user: AuthUser) -> Result<axum::Json<Me>> {
    let me = state
        .db
        .read(|mut conn| async move {
            sqlx::query_as!(
                Me,
                "SELECT id, email, created_at FROM auth.users WHERE id = $1",
                user.user_id
            )
            .fetch_optional(&mut *conn)
            .instrument(common::db_span!("db.users.get", "SELECT"))
            .await
        })
        .await?
        .ok_or(Error::UnknownUser)?;
    Ok(axum::Json(me))
}

/// What a password check needs of an account.
#[derive(Debug, Clone)]
pub struct StoredAccount {
    pub id: Uuid,
    pub password_hash: String,
    /// An operator disabled it: no login, no refresh.
    pub disabled: bool,
}

/// The account with this email, compared case-insensitively.
#[tracing::instrument(target = "db.client", name = "db.users.find_by_email", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub(crate) async fn find_by_email(
    conn: &mut sqlx::PgConnection,
    email: &Email,
) -> sqlx::Result<Option<StoredAccount>> {
    sqlx::query_as!(
        StoredAccount,
        r#"SELECT id, password_hash, disabled_at IS NOT NULL AS "disabled!"
           FROM auth.users WHERE lower(email) = lower($1)"#,
        email.as_str()
    )
    .fetch_optional(conn)
    .await
}

/// The account with this id.
#[tracing::instrument(target = "db.client", name = "db.users.find_by_id", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub(crate) async fn find_by_id(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<StoredAccount>> {
    sqlx::query_as!(
        StoredAccount,
        r#"SELECT id, password_hash, disabled_at IS NOT NULL AS "disabled!"
           FROM auth.users WHERE id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Replaces a hash made at a lower cost than the configured one, unless the password was
/// changed meanwhile (then the new password's hash stays).
#[tracing::instrument(target = "db.client", name = "db.users.replace_hash", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
pub(crate) async fn replace_hash(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE auth.users SET password_hash = $3, updated_at = now()
         WHERE id = $1 AND password_hash = $2",
        user,
        old_hash,
        new_hash
    )
    .execute(conn)
    .await?;
    Ok(())
}
