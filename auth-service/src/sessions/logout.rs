//! `POST /logout?scope=`: the session of a refresh token (`local`, the default), every other
//! session of the caller (`others`), or all of them (`global`).

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use common::auth::AuthUser;
use common::db::run_to_completion;
use common::extract::{Json, Query};
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::RefreshRequest;
use super::store::{self, Ended, Reason};
use crate::AppState;
use crate::client_ip::ClientIp;
use crate::error::{Error, Result};

/// Which sessions a logout ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The session of the refresh token in the body.
    #[default]
    Local,
    /// Every session of the bearer token's user but its own.
    Others,
    /// Every session of the bearer token's user, its own included.
    Global,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogoutQuery {
    /// `local` (default): the body's refresh token's session; `others` and `global` need a
    /// bearer token instead, and take no body.
    #[serde(default)]
    #[param(inline)]
    pub scope: Scope,
}

/// Ends sessions, on every service.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    params(LogoutQuery),
    request_body(content = RefreshRequest, description = "Required for `scope=local`; ignored otherwise"),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "Sessions ended: their refresh tokens and access tokens stop working"),
        (status = 400, description = "Malformed body, or an unknown scope", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(400, "Failed to deserialize query string: scope: unknown variant `everyone`, expected one of `local`, `others`, `global`"))),
        (status = 401, description = "`local`: not a live refresh token; `others`, `global`: missing or invalid bearer token", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "invalid refresh token"))),
        common::openapi::BodyErrors,
        (status = 429, description = "Too many refresh and logout requests from this client; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(429, "too many attempts; retry later"))),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Query(query): Query<LogoutQuery>,
    request: Request,
) -> Result<StatusCode> {
    if let Err(error) = state.limit_token_requests(client_ip).await {
        state
            .metrics
            .logouts
            .with_label_values(&["rate_limited"])
            .inc();
        return Err(error);
    }
    match query.scope {
        Scope::Local => {
            let Json(body) = Json::<RefreshRequest>::from_request(request, &state).await?;
            end_by_refresh_token(&state, body, client_ip).await
        }
        scope => {
            let (mut parts, _body) = request.into_parts();
            let caller = AuthUser::from_request_parts(&mut parts, &state).await?;
            let (except, reason) = match scope {
                Scope::Others => (Some(caller.session_id), Reason::LogoutOthers),
                _ => (None, Reason::LogoutGlobal),
            };
            let db = state.db.clone();
            let revoked = run_to_completion(async move {
                let mut conn = db.acquire().await?;
                store::revoke_all(&mut conn, caller.user_id, except, reason).await
            })
            .await?;
            state.metrics.logouts.with_label_values(&["success"]).inc();
            tracing::info!(user_id = %caller.user_id, session_id = %caller.session_id, ?scope, ended = revoked.len(), %client_ip, "logged out");
            state.revoke_locally(revoked);
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

async fn end_by_refresh_token(
    state: &AppState,
    body: RefreshRequest,
    client_ip: std::net::IpAddr,
) -> Result<StatusCode> {
    let (db, grace) = (state.db.clone(), state.lifetimes.reuse_grace_seconds);
    let ended = run_to_completion(async move {
        let mut conn = db.acquire().await?;
        store::end(&mut conn, body.refresh_token.expose_secret(), grace).await
    })
    .await?;
    match ended {
        Ended::LoggedOut { user_id, revoked } => {
            state.metrics.logouts.with_label_values(&["success"]).inc();
            tracing::info!(user_id = %user_id, session_id = %revoked.sid, %client_ip, "logged out");
            state.revoke_locally([revoked]);
            Ok(StatusCode::NO_CONTENT)
        }
        Ended::Reused { user_id, revoked } => {
            state.metrics.logouts.with_label_values(&["reused"]).inc();
            state.metrics.refresh_reuse_detected.inc();
            tracing::warn!(user_id = %user_id, session_id = %revoked.sid, %client_ip, "spent refresh token presented at logout; session revoked");
            state.revoke_locally([revoked]);
            Err(Error::InvalidRefreshToken)
        }
        Ended::Invalid => {
            state.metrics.logouts.with_label_values(&["invalid"]).inc();
            Err(Error::InvalidRefreshToken)
        }
    }
}
