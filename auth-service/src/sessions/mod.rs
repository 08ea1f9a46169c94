//! Sessions: login, refresh (with rotation and reuse detection) and logout.

pub mod refresh_token;
pub mod store;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::client_ip::ClientIp;
use crate::error::{Error, Result};
use crate::hashing::Slot;
use crate::limits::Account;
use crate::users::{self, Credentials, Email, Password};
use common::db::run_to_completion;
use common::extract::Json;
use common::revocation::RevokedSession;
use secrecy::ExposeSecret;
use store::{Ended, Rotation};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
}

#[derive(Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    /// Single use: each refresh returns a new one and the old one dies.
    pub refresh_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 86400)]
    pub expires_in: u64,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

/// Token responses must never be cached (RFC 6749 §5.1).
fn token_response(pair: TokenPair) -> impl IntoResponse {
    (
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::PRAGMA, "no-cache"),
        ],
        axum::Json(pair),
    )
}

impl AppState {
    fn token_pair(&self, user: Uuid, session: Uuid, refresh_token: String) -> TokenPair {
        TokenPair {
            access_token: self
                .auth
                .keys
                .sign_access(user, session, self.lifetimes.access_seconds),
            refresh_token,
            token_type: "bearer",
            expires_in: self.lifetimes.access_seconds,
        }
    }

    /// Refresh and logout share one per-client budget: together they are what a client does
    /// with a refresh token.
    async fn limit_token_requests(&self, client_ip: std::net::IpAddr) -> Result<()> {
        let client = self.limits.client_key(client_ip);
        self.limits
            .hit(&self.db, self.limits.refresh_per_ip, &client)
            .await
    }

    /// Makes a revocation effective on this replica at once; others learn it from the table.
    fn revoke_locally(&self, revoked: RevokedSession) {
        self.auth.revoked.revoke_locally(revoked);
    }
}

/// Exchanges email and password for an access token and a refresh token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = crate::openapi::LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        (status = 400, description = "Malformed body, invalid email, or password outside 1..=72 bytes", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "email is not a valid address"))),
        (status = 401, description = "Unknown email or wrong password (one answer for both)", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "invalid email or password"))),
        common::openapi::BodyErrors,
        (status = 429, description = "Too many attempts from this client, or too many failed logins for this account; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(429, "too many attempts; retry later"))),
        (status = 503, description = "Password hashing saturated; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(503, "too many logins in progress; retry shortly"))),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(body): Json<Credentials>,
) -> Result<impl IntoResponse> {
    let email = Email::parse(&body.email).map_err(Error::Invalid)?;
    let password = Password::for_login(body.password).map_err(Error::Invalid)?;
    let outcome = limited_authenticate(&state, client_ip, &email, password).await;
    let label = match &outcome {
        Ok(_) => "success",
        Err(Error::InvalidCredentials) => "invalid_credentials",
        Err(Error::HashingBusy) => "busy",
        Err(Error::RateLimited { .. }) => "rate_limited",
        Err(_) => "error",
    };
    state.metrics.logins.with_label_values(&[label]).inc();
    let user = match outcome {
        Ok(user) => user,
        Err(error) => {
            if matches!(error, Error::InvalidCredentials) {
                tracing::info!(%client_ip, "login failed");
            }
            return Err(error);
        }
    };
    let (db, lifetimes) = (state.db.clone(), state.lifetimes);
    let started = run_to_completion(async move {
        let mut conn = db.acquire().await?;
        store::start(&mut conn, user, lifetimes).await
    })
    .await?;
    tracing::info!(user_id = %user, session_id = %started.session_id, %client_ip, "login succeeded");
    Ok(token_response(state.token_pair(
        user,
        started.session_id,
        started.refresh_token,
    )))
}

/// `authenticate` behind the abuse limits: attempts per client, then failed logins per
/// (account, client) and per account. The account is known only after the lookup, so the
/// failed-login budget is the user's whatever spelling of the email reached it; an unknown
/// email has a budget of its own, so a refusal does not reveal whether the account exists.
async fn limited_authenticate(
    state: &AppState,
    client_ip: std::net::IpAddr,
    email: &Email,
    password: Password,
) -> Result<Uuid> {
    let limits = &state.limits;
    let client = limits.client_key(client_ip);
    limits.hit(&state.db, limits.login_per_ip, &client).await?;
    // Taking the hashing slot before any other work lets a saturated pool refuse a login
    // before it costs a database round trip.
    let slot = state.hasher.reserve().await.map_err(users::hash_error)?;
    let account = {
        let mut conn = state.db.acquire().await?;
        users::find_by_email(&mut conn, email).await?
    };
    let (budget, stored) = match account {
        Some((user, hash)) => (Account::User(user), Some((user, hash))),
        None => (Account::UnknownEmail(email.normalised()), None),
    };
    let counted = limits
        .count_failed_login(&state.db, &budget, &client, client_ip)
        .await?;
    let outcome = authenticate(state, slot, stored, password).await;
    if !matches!(outcome, Err(Error::InvalidCredentials)) {
        // Right password (or no verdict): it was not a failed login after all.
        if let Err(error) = counted.forgive(&state.db).await {
            tracing::warn!(%error, "could not take a successful login off the failed-login count");
        }
    }
    outcome
}

/// The user whose password this is. Unknown emails cost one bcrypt verification too, so the
/// answer's timing does not tell which emails have accounts.
async fn authenticate(
    state: &AppState,
    slot: Slot<'_>,
    account: Option<(Uuid, String)>,
    password: Password,
) -> Result<Uuid> {
    let (user, stored_hash) = account.unzip();
    let secret = password.into_secret();
    let rehash_input = secret.clone();
    let matches = slot
        .verify(secret, stored_hash.clone())
        .await
        .map_err(users::hash_error)?;
    match (user, matches) {
        (Some(user), true) => {
            if let Some(hash) = stored_hash {
                rehash_if_weaker(state, user, &hash, rehash_input);
            }
            Ok(user)
        }
        _ => Err(Error::InvalidCredentials),
    }
}

/// After BCRYPT_COST was raised, each user's hash is upgraded at their next login, off the
/// request path.
fn rehash_if_weaker(state: &AppState, user: Uuid, hash: &str, password: SecretString) {
    let stored_cost = hash.split('$').nth(2).and_then(|c| c.parse::<u32>().ok());
    if stored_cost.is_none_or(|cost| cost >= state.hasher.cost()) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let Ok(new_hash) = state.hasher.hash(password).await else {
            return;
        };
        let result = match state.db.acquire().await {
            Ok(mut conn) => users::replace_hash(&mut conn, user, &new_hash).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => tracing::info!(user_id = %user, "password rehashed at the configured cost"),
            Err(error) => tracing::warn!(%error, user_id = %user, "rehash failed"),
        }
    });
}

/// Exchanges a refresh token for a new access token and a new refresh token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "Rotated: use the new refresh token from now on", body = TokenPair),
        (status = 400, description = "Malformed body (refresh_token missing or not a string)", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "Failed to deserialize the JSON body into the target type: missing field `refresh_token` at line 1 column 2"))),
        (status = 401, description = "Not a live refresh token; a spent one also ends its session", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "invalid refresh token"))),
        common::openapi::BodyErrors,
        (status = 429, description = "Too many refresh and logout requests from this client; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(429, "too many attempts; retry later"))),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(body): Json<RefreshRequest>,
) -> Result<impl IntoResponse> {
    if let Err(error) = state.limit_token_requests(client_ip).await {
        state
            .metrics
            .refreshes
            .with_label_values(&["rate_limited"])
            .inc();
        return Err(error);
    }
    let (db, lifetimes) = (state.db.clone(), state.lifetimes);
    let rotation = run_to_completion(async move {
        let mut conn = db.acquire().await?;
        store::rotate(&mut conn, body.refresh_token.expose_secret(), lifetimes).await
    })
    .await?;
    match rotation {
        Rotation::Rotated {
            user_id,
            session_id,
            refresh_token,
        } => {
            state
                .metrics
                .refreshes
                .with_label_values(&["success"])
                .inc();
            Ok(token_response(state.token_pair(
                user_id,
                session_id,
                refresh_token,
            )))
        }
        Rotation::Reused { user_id, revoked } => {
            state.metrics.refreshes.with_label_values(&["reused"]).inc();
            state.metrics.refresh_reuse_detected.inc();
            tracing::warn!(user_id = %user_id, session_id = %revoked.sid, %client_ip, "refresh token reuse detected; session revoked");
            state.revoke_locally(revoked);
            Err(Error::InvalidRefreshToken)
        }
        Rotation::Invalid => {
            state
                .metrics
                .refreshes
                .with_label_values(&["invalid"])
                .inc();
            Err(Error::InvalidRefreshToken)
        }
    }
}

/// Ends the session of a refresh token, on every service.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Session ended: its refresh token and access tokens stop working"),
        (status = 400, description = "Malformed body", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "Failed to parse the request body as JSON: expected value at line 1 column 1"))),
        (status = 401, description = "Not a live refresh token", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "invalid refresh token"))),
        common::openapi::BodyErrors,
        (status = 429, description = "Too many refresh and logout requests from this client; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(429, "too many attempts; retry later"))),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(body): Json<RefreshRequest>,
) -> Result<StatusCode> {
    if let Err(error) = state.limit_token_requests(client_ip).await {
        state
            .metrics
            .logouts
            .with_label_values(&["rate_limited"])
            .inc();
        return Err(error);
    }
    let db = state.db.clone();
    let ended = run_to_completion(async move {
        let mut conn = db.acquire().await?;
        store::end(&mut conn, body.refresh_token.expose_secret()).await
    })
    .await?;
    match ended {
        Ended::LoggedOut { user_id, revoked } => {
            state.metrics.logouts.with_label_values(&["success"]).inc();
            tracing::info!(user_id = %user_id, session_id = %revoked.sid, %client_ip, "logged out");
            state.revoke_locally(revoked);
            Ok(StatusCode::NO_CONTENT)
        }
        Ended::Reused { user_id, revoked } => {
            state.metrics.logouts.with_label_values(&["reused"]).inc();
            state.metrics.refresh_reuse_detected.inc();
            tracing::warn!(user_id = %user_id, session_id = %revoked.sid, %client_ip, "spent refresh token presented at logout; session revoked");
            state.revoke_locally(revoked);
            Err(Error::InvalidRefreshToken)
        }
        Ended::Invalid => {
            state.metrics.logouts.with_label_values(&["invalid"]).inc();
            Err(Error::InvalidRefreshToken)
        }
    }
}
