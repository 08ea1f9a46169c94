//! The SQL of sessions and refresh-token rotation. Owns `auth.sessions` and `auth.refresh_tokens`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::refresh_token;
use common::revocation::RevokedSession;

/// Lifetimes of what a session hands out.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// An access token's `exp`, from its issue.
    pub access_seconds: u64,
    /// How long verifiers accept a new access token: `access_seconds` plus their clock-skew
    /// leeway and the second `exp` is rounded down to. A session's `access_expires_at` is set
    /// this far ahead, because a revoked session must stay on the revocation feed until its
    /// last token is refused by every verifier, not merely until `exp`.
    pub accepted_seconds: u64,
    pub refresh_seconds: u64,
}

impl Lifetimes {
    pub fn new(access_seconds: u64, leeway_seconds: u64, refresh_seconds: u64) -> Self {
        Self {
            access_seconds,
            accepted_seconds: access_seconds + leeway_seconds + 1,
            refresh_seconds,
        }
    }
}

pub struct Started {
    pub session_id: Uuid,
    pub refresh_token: String,
}

pub enum Rotation {
    /// The token was live: it is now spent, and its successor is issued.
    Rotated {
        user_id: Uuid,
        session_id: Uuid,
        refresh_token: String,
    },
    /// The token had been spent before: the whole session is now revoked.
    Reused {
        user_id: Uuid,
        revoked: RevokedSession,
    },
    /// Unknown, expired, or of an already revoked session.
    Invalid,
}

/// Starts a session for `user` and issues its first refresh token, in one statement (both
/// rows or neither, one round trip).
#[tracing::instrument(name = "db.sessions.start", skip_all, fields(db.system = "postgresql", db.operation.name = "INSERT", otel.kind = "client"))]
pub async fn start(
    conn: &mut PgConnection,
    user: Uuid,
    lifetimes: Lifetimes,
) -> sqlx::Result<Started> {
    let session_id = Uuid::new_v4();
    let token = refresh_token::mint();
    sqlx::query!(
        "WITH session AS (
           INSERT INTO auth.sessions (id, user_id, access_expires_at)
           VALUES ($1, $2, now() + make_interval(secs => $3))
           RETURNING id
         )
         INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
         SELECT $4, id, now() + make_interval(secs => $5) FROM session",
        session_id,
        user,
        lifetimes.accepted_seconds as f64,
        token.hash,
        lifetimes.refresh_seconds as f64
    )
    .execute(conn)
    .await?;
    Ok(Started {
        session_id,
        refresh_token: token.value,
    })
}

/// Spends `presented` and issues its successor in one statement: one round trip, atomic
/// without a transaction. Spending is a conditional UPDATE, so of concurrent uses of one token
/// exactly one wins; the others find it spent and revoke the session (which also kills the
/// winner's successor: intended).
///
/// Reuse is detected by a second statement, run only when the first spent nothing: it must
/// see the winner's commit, and a sub-statement of the first would still read the snapshot
/// taken before it.
#[tracing::instrument(name = "db.sessions.rotate", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
pub async fn rotate(
    conn: &mut PgConnection,
    presented: &str,
    lifetimes: Lifetimes,
) -> sqlx::Result<Rotation> {
    let hash = refresh_token::hash(presented);
    let successor = refresh_token::mint();
    let spent = sqlx::query!(
        r#"WITH spent AS (
           UPDATE auth.refresh_tokens t SET used_at = now()
           FROM auth.sessions s
           WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now()
             AND s.id = t.session_id AND s.revoked_at IS NULL
           RETURNING t.session_id, s.user_id
         ), extended AS (
           UPDATE auth.sessions SET access_expires_at = now() + make_interval(secs => $3)
           WHERE id = (SELECT session_id FROM spent)
         ), issued AS (
           INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
           SELECT $2, session_id, now() + make_interval(secs => $4) FROM spent
         )
         SELECT session_id AS "session_id!", user_id AS "user_id!" FROM spent"#,
        hash,
        successor.hash,
        lifetimes.accepted_seconds as f64,
        lifetimes.refresh_seconds as f64
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match spent {
        Some(spent) => Rotation::Rotated {
            user_id: spent.user_id,
            session_id: spent.session_id,
            refresh_token: successor.value,
        },
        None => match revoke_if_spent(conn, &hash).await? {
            Some((user_id, revoked)) => Rotation::Reused { user_id, revoked },
            None => Rotation::Invalid,
        },
    })
}

/// If `hash` is a spent token of a live session, revokes that session (reuse detected).
async fn revoke_if_spent(
    conn: &mut PgConnection,
    hash: &[u8],
) -> sqlx::Result<Option<(Uuid, RevokedSession)>> {
    let row = sqlx::query!(
        r#"UPDATE auth.sessions s SET revoked_at = now(), revoked_reason = 'refresh_reuse'
           FROM auth.refresh_tokens t
           WHERE t.token_hash = $1 AND t.used_at IS NOT NULL
             AND s.id = t.session_id AND s.revoked_at IS NULL
           RETURNING s.id, s.user_id, s.revoked_at AS "revoked_at!", s.access_expires_at"#,
        hash
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| {
        (
            r.user_id,
            RevokedSession {
                sid: r.id,
                revoked_at: r.revoked_at,
                expires_at: r.access_expires_at,
            },
        )
    }))
}

pub enum Ended {
    /// The token was live: its session is now revoked.
    LoggedOut {
        user_id: Uuid,
        revoked: RevokedSession,
    },
    /// The token was spent: treated as reuse, the session is revoked all the same.
    Reused {
        user_id: Uuid,
        revoked: RevokedSession,
    },
    Invalid,
}

/// Ends the session `presented` belongs to.
#[tracing::instrument(name = "db.sessions.end", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
pub async fn end(conn: &mut PgConnection, presented: &str) -> sqlx::Result<Ended> {
    let hash = refresh_token::hash(presented);
    let row = sqlx::query!(
        r#"UPDATE auth.sessions s SET revoked_at = now(), revoked_reason = 'logout'
           FROM auth.refresh_tokens t
           WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now()
             AND s.id = t.session_id AND s.revoked_at IS NULL
           RETURNING s.id, s.user_id, s.revoked_at AS "revoked_at!", s.access_expires_at"#,
        hash
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = row {
        return Ok(Ended::LoggedOut {
            user_id: r.user_id,
            revoked: RevokedSession {
                sid: r.id,
                revoked_at: r.revoked_at,
                expires_at: r.access_expires_at,
            },
        });
    }
    Ok(match revoke_if_spent(conn, &hash).await? {
        Some((user_id, revoked)) => Ended::Reused { user_id, revoked },
        None => Ended::Invalid,
    })
}

/// Revoked sessions whose access tokens may still be presented, revoked at or after `since`.
/// Only the background poller and the admin feed run it (no request span around it): a span
/// per poll would bury the request traces, so it is traced at debug level only.
#[tracing::instrument(level = "debug", name = "db.sessions.revoked_since", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub async fn revoked_since(
    conn: &mut PgConnection,
    since: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<RevokedSession>> {
    sqlx::query_as!(
        RevokedSession,
        r#"SELECT id AS sid, revoked_at AS "revoked_at!", access_expires_at AS expires_at
           FROM auth.sessions
           WHERE revoked_at IS NOT NULL AND revoked_at >= coalesce($1::timestamptz, '-infinity'::timestamptz)
             AND access_expires_at > now()
           ORDER BY revoked_at"#,
        since
    )
    .fetch_all(conn)
    .await
}

/// Deletes what can never be used again: refresh tokens past expiry, and sessions with no live
/// refresh token whose access tokens have all expired.
/// A background job, traced at debug level only, like `revoked_since`.
#[tracing::instrument(level = "debug", name = "db.sessions.delete_expired", skip_all, fields(db.system = "postgresql", db.operation.name = "DELETE", otel.kind = "client"))]
pub async fn delete_expired(conn: &mut PgConnection) -> sqlx::Result<u64> {
    let tokens = sqlx::query!("DELETE FROM auth.refresh_tokens WHERE expires_at < now()")
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let sessions = sqlx::query!(
        "DELETE FROM auth.sessions s
         WHERE s.access_expires_at < now()
           AND NOT EXISTS (SELECT 1 FROM auth.refresh_tokens t WHERE t.session_id = s.id)"
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(tokens + sessions)
}
