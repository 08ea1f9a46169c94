//! The SQL of sessions and refresh-token rotation. Owns `auth.sessions` and `auth.refresh_tokens`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::refresh_token;
use common::revocation::{FeedPage, RevokedSession};

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
    /// A session's absolute lifetime from its login: no refresh token of it outlives this,
    /// and no access token is issued past it.
    pub session_max_seconds: u64,
    /// How long after its first use a spent refresh token still gets a pair of its session
    /// (two tabs racing) instead of revoking it; 0 = never.
    pub reuse_grace_seconds: u64,
}

impl Lifetimes {
    pub fn new(access_seconds: u64, leeway_seconds: u64, refresh_seconds: u64) -> Self {
        Self {
            access_seconds,
            accepted_seconds: access_seconds + leeway_seconds + 1,
            refresh_seconds,
            session_max_seconds: 90 * 86_400,
            reuse_grace_seconds: 0,
        }
    }

    /// The access-token lifetime for a session that ends at `ends_at`: never past its end.
    pub fn access_seconds_until(&self, ends_at: Option<DateTime<Utc>>) -> u64 {
        let Some(ends_at) = ends_at else {
            return self.access_seconds;
        };
        let left = (ends_at - Utc::now()).num_seconds().max(1);
        self.access_seconds.min(left as u64)
    }
}

/// What a login records about its client, so that a user can tell their sessions apart.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: Option<String>,
}

/// The longest user agent kept: enough for any real browser's.
const USER_AGENT_MAX_BYTES: usize = 512;

impl ClientInfo {
    pub fn new(ip: std::net::IpAddr, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent
            .map(str::trim)
            .filter(|ua| !ua.is_empty())
            .map(|ua| {
                let mut end = ua.len().min(USER_AGENT_MAX_BYTES);
                while !ua.is_char_boundary(end) {
                    end -= 1;
                }
                ua[..end].to_owned()
            });
        Self {
            ip: ip.to_string(),
            user_agent,
        }
    }
}

pub struct Started {
    pub session_id: Uuid,
    pub refresh_token: String,
    pub ends_at: DateTime<Utc>,
}

/// A new refresh token of a live session, and when that session ends.
pub struct Issued {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub refresh_token: String,
    pub ends_at: Option<DateTime<Utc>>,
}

pub enum Rotation {
    /// The token was live: it is now spent, and its successor is issued.
    Rotated(Issued),
    /// The token was spent moments ago (within the reuse grace): another successor of the same
    /// session is issued, and the session lives on.
    Graced(Issued),
    /// The token had been spent before: the whole session is now revoked.
    Reused {
        user_id: Uuid,
        revoked: RevokedSession,
    },
    /// Unknown, expired, or of an already revoked session.
    Invalid,
}

/// Starts a session for `user` and issues its first refresh token, in one statement (both
/// rows or neither, one round trip) — provided the account still has `password_hash` and is not
/// disabled. `None`: it changed since the password was checked (deleted, disabled, or a new
/// password), and no session starts. The user row is read `FOR SHARE`, so a concurrent password
/// change, disable or deletion (which lock it first) waits for this login, then revokes its
/// session, or this login waits for them and finds the change.
#[tracing::instrument(target = "db.client", name = "db.sessions.start", skip_all, fields(db.system = "postgresql", db.operation.name = "INSERT", otel.kind = "client"))]
pub async fn start(
    conn: &mut PgConnection,
    user: Uuid,
    password_hash: &str,
    client: &ClientInfo,
    lifetimes: Lifetimes,
) -> sqlx::Result<Option<Started>> {
    let session_id = Uuid::new_v4();
    let token = refresh_token::mint();
    let ends_at = sqlx::query_scalar!(
        r#"WITH owner AS (
           SELECT id FROM auth.users
           WHERE id = $2 AND password_hash = $7 AND disabled_at IS NULL
           FOR SHARE
         ), session AS (
           INSERT INTO auth.sessions (id, user_id, access_expires_at, ends_at, user_agent, client_ip)
           SELECT $1, id, now() + make_interval(secs => $3), now() + make_interval(secs => $6), $8, $9
           FROM owner
           RETURNING id, ends_at
         ), issued AS (
           INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
           SELECT $4, id, least(now() + make_interval(secs => $5), ends_at) FROM session
         )
         SELECT ends_at AS "ends_at!" FROM session"#,
        session_id,
        user,
        lifetimes.accepted_seconds as f64,
        token.hash,
        lifetimes.refresh_seconds as f64,
        lifetimes.session_max_seconds as f64,
        password_hash,
        client.user_agent.as_deref(),
        client.ip
    )
    .fetch_optional(conn)
    .await?;
    Ok(ends_at.map(|ends_at| Started {
        session_id,
        refresh_token: token.value,
        ends_at,
    }))
}

/// Spends `presented` and issues its successor in one statement: one round trip, atomic
/// without a transaction. Spending is a conditional UPDATE, so of concurrent uses of one token
/// exactly one wins; the others find it spent and revoke the session (which also kills the
/// winner's successor: intended).
///
/// Reuse is detected by a second statement, run only when the first spent nothing: it must
/// see the winner's commit, and a sub-statement of the first would still read the snapshot
/// taken before it.
///
/// A session started before the absolute lifetime existed has no `ends_at` (migration 0003):
/// it ends `session_max_seconds` after its login all the same, and its first refresh records
/// that end, or each successor would renew it for ever.
#[tracing::instrument(target = "db.client", name = "db.sessions.rotate", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
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
             AND coalesce(s.ends_at, s.created_at + make_interval(secs => $5)) > now()
           RETURNING t.session_id, s.user_id,
                     coalesce(s.ends_at, s.created_at + make_interval(secs => $5)) AS ends_at
         ), extended AS (
           UPDATE auth.sessions SET access_expires_at = now() + make_interval(secs => $3),
                                    last_used_at = now(),
                                    ends_at = (SELECT ends_at FROM spent)
           WHERE id = (SELECT session_id FROM spent)
         ), issued AS (
           INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
           SELECT $2, session_id, least(now() + make_interval(secs => $4), ends_at) FROM spent
         )
         SELECT session_id AS "session_id!", user_id AS "user_id!", ends_at AS "ends_at!"
         FROM spent"#,
        hash,
        successor.hash,
        lifetimes.accepted_seconds as f64,
        lifetimes.refresh_seconds as f64,
        lifetimes.session_max_seconds as f64
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(spent) = spent {
        return Ok(Rotation::Rotated(Issued {
            user_id: spent.user_id,
            session_id: spent.session_id,
            refresh_token: successor.value,
            ends_at: Some(spent.ends_at),
        }));
    }
    if lifetimes.reuse_grace_seconds > 0
        && let Some(issued) = reissue_within_grace(conn, &hash, lifetimes).await?
    {
        return Ok(Rotation::Graced(issued));
    }
    Ok(match revoke_if_spent(conn, &hash).await? {
        Some((user_id, revoked)) => Rotation::Reused { user_id, revoked },
        None => Rotation::Invalid,
    })
}

/// If `hash` was spent less than the reuse grace ago and its session is live, issues the
/// session another successor: the second of two racing tabs gets a working pair too. Like
/// reuse detection, a statement of its own, so that it sees the winner's commit. The pair's
/// access token is new, so the session's `access_expires_at` moves out to cover it as a
/// rotation's does: a revoked session stays on the revocation feed until then.
async fn reissue_within_grace(
    conn: &mut PgConnection,
    hash: &[u8],
    lifetimes: Lifetimes,
) -> sqlx::Result<Option<Issued>> {
    let successor = refresh_token::mint();
    let row = sqlx::query!(
        r#"WITH graced AS (
           SELECT t.session_id, s.user_id,
                  coalesce(s.ends_at, s.created_at + make_interval(secs => $6)) AS ends_at
           FROM auth.refresh_tokens t JOIN auth.sessions s ON s.id = t.session_id
           WHERE t.token_hash = $1 AND t.used_at IS NOT NULL
             AND t.used_at > now() - make_interval(secs => $3)
             AND s.revoked_at IS NULL
             AND coalesce(s.ends_at, s.created_at + make_interval(secs => $6)) > now()
         ), extended AS (
           UPDATE auth.sessions
           SET access_expires_at = greatest(access_expires_at, now() + make_interval(secs => $5)),
               last_used_at = now(),
               ends_at = (SELECT ends_at FROM graced)
           WHERE id = (SELECT session_id FROM graced)
         ), issued AS (
           INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
           SELECT $2, session_id, least(now() + make_interval(secs => $4), ends_at) FROM graced
         )
         SELECT session_id AS "session_id!", user_id AS "user_id!", ends_at AS "ends_at!"
         FROM graced"#,
        hash,
        successor.hash,
        lifetimes.reuse_grace_seconds as f64,
        lifetimes.refresh_seconds as f64,
        lifetimes.accepted_seconds as f64,
        lifetimes.session_max_seconds as f64
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Issued {
        user_id: r.user_id,
        session_id: r.session_id,
        refresh_token: successor.value,
        ends_at: Some(r.ends_at),
    }))
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
           RETURNING s.id, s.user_id AS "user_id!", s.revoked_at AS "revoked_at!", s.access_expires_at"#,
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

/// Ends the session `presented` belongs to. A token spent less than `reuse_grace_seconds` ago
/// (the other tab of two racing ones refreshed first) logs its session out as a live one does:
/// the user asked to leave, and within the grace a refresh with it would have been honoured.
#[tracing::instrument(target = "db.client", name = "db.sessions.end", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
pub async fn end(
    conn: &mut PgConnection,
    presented: &str,
    reuse_grace_seconds: u64,
) -> sqlx::Result<Ended> {
    let hash = refresh_token::hash(presented);
    let row = sqlx::query!(
        r#"UPDATE auth.sessions s SET revoked_at = now(), revoked_reason = 'logout'
           FROM auth.refresh_tokens t
           WHERE t.token_hash = $1
             AND ((t.used_at IS NULL AND t.expires_at > now())
                  OR ($2 > 0 AND t.used_at > now() - make_interval(secs => $2)))
             AND s.id = t.session_id AND s.revoked_at IS NULL
           RETURNING s.id, s.user_id AS "user_id!", s.revoked_at AS "revoked_at!", s.access_expires_at"#,
        hash,
        reuse_grace_seconds as f64
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

/// Why a session was revoked: the `revoked_reason` column, for an operator reading the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    LogoutOthers,
    LogoutGlobal,
    EndedByUser,
    PasswordChanged,
    AccountDeleted,
    Disabled,
    OperatorRevoked,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::LogoutOthers => "logout_others",
            Reason::LogoutGlobal => "logout_global",
            Reason::EndedByUser => "ended_by_user",
            Reason::PasswordChanged => "password_changed",
            Reason::AccountDeleted => "account_deleted",
            Reason::Disabled => "disabled",
            Reason::OperatorRevoked => "operator_revoked",
        }
    }
}

/// Revokes every session of `user` but `except`: one statement, so a login that commits
/// after it is the only session left standing (the callers lock the user row first, which
/// such a login waits for).
#[tracing::instrument(target = "db.client", name = "db.sessions.revoke_all", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
pub async fn revoke_all(
    conn: &mut PgConnection,
    user: Uuid,
    except: Option<Uuid>,
    reason: Reason,
) -> sqlx::Result<Vec<RevokedSession>> {
    sqlx::query_as!(
        RevokedSession,
        r#"UPDATE auth.sessions SET revoked_at = now(), revoked_reason = $3
           WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2
           RETURNING id AS sid, revoked_at AS "revoked_at!", access_expires_at AS expires_at"#,
        user,
        except,
        reason.as_str()
    )
    .fetch_all(conn)
    .await
}

/// Revokes `session` if it is a live session of `user` (as `list` shows them); `None` when it
/// is not (unknown, another user's, or already ended, revoked or expired: the caller cannot
/// tell which).
#[tracing::instrument(target = "db.client", name = "db.sessions.revoke_one", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
pub async fn revoke_one(
    conn: &mut PgConnection,
    user: Uuid,
    session: Uuid,
    reason: Reason,
    session_max_seconds: u64,
) -> sqlx::Result<Option<RevokedSession>> {
    sqlx::query_as!(
        RevokedSession,
        r#"UPDATE auth.sessions s SET revoked_at = now(), revoked_reason = $3
           WHERE s.id = $2 AND s.user_id = $1 AND s.revoked_at IS NULL
             AND (s.access_expires_at > now() OR EXISTS (
                   SELECT 1 FROM auth.refresh_tokens t
                   WHERE t.session_id = s.id AND t.used_at IS NULL AND t.expires_at > now()
                     AND coalesce(s.ends_at, s.created_at + make_interval(secs => $4)) > now()))
           RETURNING s.id AS sid, s.revoked_at AS "revoked_at!", s.access_expires_at AS expires_at"#,
        user,
        session,
        reason.as_str(),
        session_max_seconds as f64
    )
    .fetch_optional(conn)
    .await
}

/// A live session as its user sees it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    /// The login that started it.
    #[serde(serialize_with = "common::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Its last login or refresh.
    #[serde(serialize_with = "common::timestamp::rfc3339")]
    pub last_used_at: DateTime<Utc>,
    /// When it ends unless refreshed (and at the latest, its absolute lifetime).
    #[serde(serialize_with = "common::timestamp::rfc3339")]
    pub expires_at: DateTime<Utc>,
    /// Whether this is the session of the access token that asked.
    pub current: bool,
    /// The `User-Agent` of its login, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client address of its login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// At most this many sessions are listed: the caller's own first, then the newest.
pub const LISTED_SESSIONS_MAX: i64 = 500;

/// The live sessions of `user`: not revoked, with a refresh token or an access token that still
/// works. `current` marks `caller`'s. A session a release before migration 0003 started (no
/// `ends_at`) ends `session_max_seconds` after its login, as `rotate` holds it to, whatever its
/// refresh tokens say. (`revoke_one` reads liveness the same way.)
#[tracing::instrument(target = "db.client", name = "db.sessions.list", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub async fn list(
    conn: &mut PgConnection,
    user: Uuid,
    caller: Uuid,
    session_max_seconds: u64,
) -> sqlx::Result<Vec<SessionView>> {
    sqlx::query_as!(
        SessionView,
        r#"SELECT s.id, s.created_at, s.last_used_at,
                  CASE WHEN max(t.expires_at) IS NULL THEN s.access_expires_at
                       ELSE least(max(t.expires_at),
                                  coalesce(s.ends_at, s.created_at + make_interval(secs => $4)))
                  END AS "expires_at!",
                  s.id = $2 AS "current!", s.user_agent, s.client_ip AS ip
           FROM auth.sessions s
           LEFT JOIN auth.refresh_tokens t
             ON t.session_id = s.id AND t.used_at IS NULL AND t.expires_at > now()
               AND coalesce(s.ends_at, s.created_at + make_interval(secs => $4)) > now()
           WHERE s.user_id = $1 AND s.revoked_at IS NULL
           GROUP BY s.id
           HAVING max(t.expires_at) IS NOT NULL OR s.access_expires_at > now()
           ORDER BY s.id = $2 DESC, s.created_at DESC
           LIMIT $3"#,
        user,
        caller,
        LISTED_SESSIONS_MAX,
        session_max_seconds as f64
    )
    .fetch_all(conn)
    .await
}

/// A read of the revocation feed (`FeedPage`): first when the oldest transaction open on the
/// database began, then the sessions revoked at or after `since`. In that order, each in a
/// statement of its own: a revocation still open at the first is reached back to by the next
/// poll; one that commits between the two is in the second's snapshot.
pub async fn revocation_feed(
    conn: &mut PgConnection,
    since: Option<DateTime<Utc>>,
) -> sqlx::Result<FeedPage> {
    let oldest_open = oldest_open_transaction(conn).await?;
    let sessions = revoked_since(conn, since).await?;
    Ok(FeedPage {
        sessions,
        oldest_open,
    })
}

/// When the oldest transaction open on this database (other than this connection's) began. A
/// revocation's `revoked_at` is its transaction's start, which is this column: a role sees it
/// for its own sessions, which are the ones that revoke (both services' pods and the operator
/// commands connect as the service's role).
async fn oldest_open_transaction(conn: &mut PgConnection) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT min(xact_start) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND backend_type = 'client backend'",
    )
    .fetch_one(conn)
    .await
}

/// Revoked sessions whose access tokens may still be presented, revoked at or after `since`.
/// Only the background poller and the admin feed run it (no request span around it): a span
/// per poll would bury the request traces, so it is traced at debug level only.
#[tracing::instrument(level = "debug", target = "db.client", name = "db.sessions.revoked_since", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
async fn revoked_since(
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
#[tracing::instrument(level = "debug", target = "db.client", name = "db.sessions.delete_expired", skip_all, fields(db.system = "postgresql", db.operation.name = "DELETE", otel.kind = "client"))]
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
