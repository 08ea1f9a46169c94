//! The `AuthUser` extractor: a verified access token of a session that is not revoked (and,
//! until this replica has loaded the revoked-sessions list, a 503 rather than a guess).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tracing::field::{Value, display};
use uuid::Uuid;

use crate::Problem;
use crate::jwt::KeyRing;
use crate::revocation::{Lookup, RevokedSessions};

/// What a service needs to authenticate a request; part of its state.
#[derive(Clone)]
pub struct Authenticator {
    pub keys: Arc<KeyRing>,
    pub revoked: RevokedSessions,
}

/// The caller, proven by a bearer access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

impl Authenticator {
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<AuthUser, Problem> {
        let token = bearer_token(authorization)?;
        let verified = self.keys.verify_access_remembered(token).map_err(|error| {
            tracing::debug!(%error, "access token refused");
            Problem::invalid_token("invalid or expired access token")
        })?;
        match self.revoked.lookup(verified.session_id) {
            Lookup::Live => {}
            Lookup::Revoked => return Err(Problem::invalid_token("the session has ended")),
            // Fail closed: until the first load this replica cannot tell an ended session from
            // a live one. Readiness keeps the Service away meanwhile; this covers direct callers.
            Lookup::NotLoaded => {
                return Err(Problem::unavailable(
                    "this replica has not loaded the revoked-sessions list yet",
                    1,
                ));
            }
        }
        Ok(AuthUser {
            user_id: verified.user_id,
            session_id: verified.session_id,
        })
    }
}

fn bearer_token(authorization: Option<&str>) -> Result<&str, Problem> {
    let value = authorization.ok_or_else(|| Problem::unauthorized("missing bearer token"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Problem::unauthorized("expected `Authorization: Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Problem::unauthorized(
            "expected `Authorization: Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

impl<S> FromRequestParts<S> for AuthUser
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authorization = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let user = Authenticator::from_ref(state).authenticate(authorization)?;
        record_caller(&tracing::Span::current(), &user);
        Ok(user)
    }
}

/// Puts the caller's user and session ids on the request's log lines, and on the request span
/// where it carries its fields (`request_fields::span_fields`), in one record: the JSON log
/// layer writes all of a span's fields out again at every record.
fn record_caller(span: &tracing::Span, user: &AuthUser) {
    crate::request_fields::set_caller(span, user.user_id, user.session_id);
    if !crate::request_fields::span_fields() {
        return;
    }
    let Some(fields) = span.metadata().map(|metadata| metadata.fields()) else {
        return;
    };
    let (Some(user_id), Some(session_id)) = (fields.field("user_id"), fields.field("session_id"))
    else {
        return;
    };
    let (user_id_value, session_id_value) = (display(user.user_id), display(user.session_id));
    span.record_all(&fields.value_set(&[
        (&user_id, Some(&user_id_value as &dyn Value)),
        (&session_id, Some(&session_id_value as &dyn Value)),
    ]));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_scheme_is_accepted() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("bearer abc")).unwrap(), "abc");
        assert!(bearer_token(Some("Basic abc")).is_err());
        assert!(bearer_token(Some("Bearer ")).is_err());
        assert!(bearer_token(Some("Bearerabc")).is_err());
        assert!(bearer_token(None).is_err());
    }

    /// A ring of one key, for unit tests of what verifies tokens.
    pub(crate) fn unit_test_ring() -> KeyRing {
        KeyRing::new(
            vec![(
                "default".into(),
                b"unit-test-key-that-is-long-enough-0123".to_vec(),
            )],
            "todo-auth",
            "todo-api",
            30,
        )
        .unwrap()
    }

    #[test]
    fn a_valid_token_waits_for_the_first_load_and_a_bad_one_is_401_regardless() {
        let keys = unit_test_ring();
        let token = format!(
            "Bearer {}",
            keys.sign_access(Uuid::new_v4(), Uuid::new_v4(), 60)
        );
        let auth = Authenticator {
            keys: Arc::new(keys),
            revoked: RevokedSessions::polled(std::time::Duration::from_secs(300)),
        };
        let refused = auth.authenticate(Some(&token)).unwrap_err();
        assert_eq!(
            refused.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        let forged = auth.authenticate(Some("Bearer not-a-jwt")).unwrap_err();
        assert_eq!(forged.status(), axum::http::StatusCode::UNAUTHORIZED);
        auth.revoked.apply([]);
        assert!(auth.authenticate(Some(&token)).is_ok());
    }
}
