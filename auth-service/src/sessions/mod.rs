//! Sessions: login, refresh (with rotation, reuse detection and the reuse grace), logout, and
//! the caller's list of sessions.

pub mod listing;
pub mod logout;
pub mod refresh_token;
pub mod store;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::client_ip::ClientIp;
use crate::credentials::{self, Claimant};
use crate::error::{Error, Result};
use crate::users::{Credentials, Email, Password, StoredAccount};
use common::db::run_to_completion;
use common::extract::Json;
use common::revocation::RevokedSession;
use secrecy::ExposeSecret;
use store::{ClientInfo, Issued, Rotation, Started};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout::logout))
        .route("/api/v1/auth/sessions", get(listing::list))
        .route("/api/v1/auth/sessions/{id}", delete(listing::end))
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
pub(crate) fn token_response(pair: TokenPair) -> impl IntoResponse {
    (
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::PRAGMA, "no-cache"),
        ],
        axum::Json(pair),
    )
}

/// The client details a login records.
pub(crate) fn client_info(client_ip: std::net::IpAddr, headers: &HeaderMap) -> ClientInfo {
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    ClientInfo::new(client_ip, user_agent)
}

impl AppState {
    /// An access token for `session` (never outliving the session's end) with `refresh_token`.
    pub(crate) fn token_pair(
        &self,
        user: Uuid,
        session: Uuid,
        refresh_token: String,
        ends_at: Option<DateTime<Utc>>,
    ) -> TokenPair {
        let seconds = self.lifetimes.access_seconds_until(ends_at);
        TokenPair {
            access_token: self.auth.keys.sign_access(user, session, seconds),
            refresh_token,
            token_type: "bearer",
            expires_in: seconds,
        }
    }

    fn issued_pair(&self, issued: Issued) -> TokenPair {
        self.token_pair(
            issued.user_id,
            issued.session_id,
            issued.refresh_token,
            issued.ends_at,
        )
    }

    /// Refresh and logout share one per-client budget: together they are what a client does
    /// with a refresh token.
    pub(crate) async fn limit_token_requests(&self, client_ip: std::net::IpAddr) -> Result<()> {
        let client = self.limits.client_key(client_ip);
        self.limits
            .hit(&self.db, self.limits.refresh_per_ip, &client)
            .await
    }

    /// Makes revocations effective on this replica at once; others learn them from the table.
    pub(crate) fn revoke_locally(&self, revoked: impl IntoIterator<Item = RevokedSession>) {
        for session in revoked {
            self.auth.revoked.revoke_locally(session);
        }
    }
}

/// Exchanges email and password for an access token and a refresh token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    security(),
    request_body = crate::openapi::LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        (status = 400, description = "Malformed body, invalid email, or password outside 1..=72 bytes", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "email is not a valid address"))),
        (status = 401, description = "Unknown email or wrong password (one answer for both), or a disabled account (said only after the right password)", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "invalid email or password"))),
        common::openapi::BodyErrors,
        (status = 429, description = "Too many attempts from this client, or too many failed logins for this account; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(429, "too many attempts; retry later"))),
        (status = 503, description = "Password hashing saturated; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(503, "too many logins in progress; retry shortly"))),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<Credentials>,
) -> Result<impl IntoResponse> {
    let email = Email::parse_to_find(&body.email).map_err(Error::Invalid)?;
    let password = Password::for_login(body.password).map_err(Error::Invalid)?;
    let client = client_info(client_ip, &headers);
    let outcome = log_in(&state, &email, password, &client, client_ip).await;
    let label = match &outcome {
        Ok(_) => "success",
        Err(Error::InvalidCredentials) => "invalid_credentials",
        Err(Error::AccountDisabled) => "disabled",
        Err(Error::HashingBusy) => "busy",
        Err(Error::RateLimited { .. }) => "rate_limited",
        Err(_) => "error",
    };
    state.metrics.logins.with_label_values(&[label]).inc();
    // A failed login's audit line is written where the account is known (`log_in`, and
    // `credentials::check_password` for a wrong password).
    let (user, started) = outcome?;
    tracing::info!(user_id = %user, session_id = %started.session_id, %client_ip, "login succeeded");
    Ok(token_response(state.token_pair(
        user,
        started.session_id,
        started.refresh_token,
        Some(started.ends_at),
    )))
}

/// The password check, then a new session, then (off the request path) a rehash if the stored
/// hash is weaker than the configured cost.
async fn log_in(
    state: &AppState,
    email: &Email,
    password: Password,
    client: &ClientInfo,
    client_ip: std::net::IpAddr,
) -> Result<(Uuid, Started)> {
    // The account can change between the check and the session's start. Deleted, disabled or
    // given a new password, it refuses this password; but a rehash (a login that found a
    // weaker hash stored another of the same password) changes it too, and the password still
    // opens it. So a login whose start finds the account changed checks the password once more,
    // against the account as it is now (one more bcrypt verification and per-IP hit, in that
    // race only).
    let mut checks_left = 2;
    loop {
        checks_left -= 1;
        let account =
            credentials::check_password(state, client_ip, Claimant::Email(email), password.clone())
                .await?;
        if account.disabled {
            tracing::info!(user_id = %account.id, %client_ip, reason = "disabled", "login failed");
            return Err(Error::AccountDisabled);
        }
        match start_session(state, &account, client.clone()).await {
            Ok(started) => {
                credentials::rehash_if_weaker(state, &account, password.into_secret());
                return Ok((account.id, started));
            }
            Err(Error::InvalidCredentials) if checks_left > 0 => continue,
            Err(error) => {
                if matches!(error, Error::InvalidCredentials) {
                    tracing::info!(user_id = %account.id, %client_ip, reason = "invalid_credentials", "login failed");
                }
                return Err(error);
            }
        }
    }
}

/// Starts a session for `account`, provided it is unchanged since its password was checked.
async fn start_session(
    state: &AppState,
    account: &StoredAccount,
    client: ClientInfo,
) -> Result<Started> {
    let (db, lifetimes) = (state.db.clone(), state.lifetimes);
    let (user, hash) = (account.id, account.password_hash.clone());
    let started = run_to_completion(async move {
        let mut conn = db.acquire().await?;
        let started = store::start(&mut conn, user, &hash, &client, lifetimes).await;
        db.observe(started)
    })
    .await?;
    // None: deleted, disabled or given a new password while this login was checking the old
    // one. Whichever it was, this password no longer opens the account.
    started.ok_or(Error::InvalidCredentials)
}

/// Exchanges a refresh token for a new access token and a new refresh token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    security(),
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "Rotated: use the new refresh token from now on", body = TokenPair),
        (status = 400, description = "Malformed body (refresh_token missing or not a string)", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "Failed to deserialize the JSON body into the target type: missing field `refresh_token` at line 1 column 2"))),
        (status = 401, description = "Not a live refresh token; a spent one also ends its session (unless REFRESH_TOKEN_REUSE_GRACE_SECONDS covers it)", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "invalid refresh token"))),
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
        let rotation =
            store::rotate(&mut conn, body.refresh_token.expose_secret(), lifetimes).await;
        db.observe(rotation)
    })
    .await?;
    match rotation {
        Rotation::Rotated(issued) => {
            state
                .metrics
                .refreshes
                .with_label_values(&["success"])
                .inc();
            Ok(token_response(state.issued_pair(issued)))
        }
        Rotation::Graced(issued) => {
            state.metrics.refreshes.with_label_values(&["graced"]).inc();
            state.metrics.refresh_reuse_graced.inc();
            tracing::info!(user_id = %issued.user_id, session_id = %issued.session_id, %client_ip, "spent refresh token reused within the grace; session kept");
            Ok(token_response(state.issued_pair(issued)))
        }
        Rotation::Reused { user_id, revoked } => {
            state.metrics.refreshes.with_label_values(&["reused"]).inc();
            state.metrics.refresh_reuse_detected.inc();
            tracing::warn!(user_id = %user_id, session_id = %revoked.sid, %client_ip, "refresh token reuse detected; session revoked");
            state.revoke_locally([revoked]);
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
