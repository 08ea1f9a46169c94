//! The SQL of the account lifecycle: a new password, deletion (with the deleted-users feed
//! task-service purges from), and the operator's disable and enable. Each is one transaction
//! that locks the user row first, so a login checking the old state either commits before it
//! (and its session is revoked here) or waits and finds the change (`sessions::store::start`).

use common::deleted_users::{DeletedUser, DeletedUsersPage};
use common::revocation::RevokedSession;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::sessions::store::{self as sessions, ClientInfo, Lifetimes, Reason, Started};

/// Sets `new_hash` as the password of `user` if its stored hash is still `checked_hash` (the one
/// the current password was verified against), ends every session, and starts a new one.
/// `None`: the account changed meanwhile (deleted, disabled, or another new password).
pub async fn change_password(
    tx: &mut PgConnection,
    user: Uuid,
    checked_hash: &str,
    new_hash: &str,
    client: &ClientInfo,
    lifetimes: Lifetimes,
) -> sqlx::Result<Option<(Vec<RevokedSession>, Started)>> {
    let changed = sqlx::query!(
        "UPDATE auth.users SET password_hash = $3, updated_at = now()
         WHERE id = $1 AND password_hash = $2 AND disabled_at IS NULL",
        user,
        checked_hash,
        new_hash
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(None);
    }
    let revoked = sessions::revoke_all(tx, user, None, Reason::PasswordChanged).await?;
    let started = sessions::start(tx, user, new_hash, client, lifetimes).await?;
    Ok(started.map(|started| (revoked, started)))
}

/// Deletes `user`: its refresh tokens go, its sessions are revoked (and stay, detached, until
/// their access tokens expire, so the revocation feed keeps listing them), the deletion is
/// recorded for task-service, and the user row goes, freeing the email. `None`: no such user.
pub async fn delete(
    tx: &mut PgConnection,
    user: Uuid,
) -> sqlx::Result<Option<Vec<RevokedSession>>> {
    let exists = sqlx::query_scalar!("SELECT id FROM auth.users WHERE id = $1 FOR UPDATE", user)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    // Tokens before sessions: the order a refresh takes its locks in, so the two cannot deadlock.
    sqlx::query!(
        "DELETE FROM auth.refresh_tokens t USING auth.sessions s
         WHERE t.session_id = s.id AND s.user_id = $1",
        user
    )
    .execute(&mut *tx)
    .await?;
    let revoked = sessions::revoke_all(tx, user, None, Reason::AccountDeleted).await?;
    sqlx::query!("DELETE FROM auth.users WHERE id = $1", user)
        .execute(&mut *tx)
        .await?;
    record_deletion(tx, user).await?;
    Ok(Some(revoked))
}

/// Adds `user` to the deleted-users feed, as the transaction's last statement.
///
/// The feed's readers keep a cursor on `seq` and never look behind it, so entries must become
/// visible in `seq` order: an entry that committed after a later `seq` was read would never be
/// purged. The table lock (it conflicts with itself, not with the feed's reads) makes deletions
/// take their `seq` and commit one at a time. It is taken last, after every row lock the
/// deletion needs (the user row's `ON DELETE SET NULL` of its sessions may wait for one), so it
/// is held only for this insert and the commit, and never while waiting for another lock.
/// `deleted_at` is the clock now, not the transaction's start: the purge settles an entry a
/// while after it, and the deletion's revocations reach the replicas only after its commit.
async fn record_deletion(tx: &mut PgConnection, user: Uuid) -> sqlx::Result<()> {
    sqlx::query!("LOCK TABLE auth.deleted_users IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO auth.deleted_users (user_id, deleted_at) VALUES ($1, clock_timestamp())",
        user
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The id of the account with this email (compared case-insensitively), locked for the rest
/// of the transaction.
pub async fn lock_by_email(tx: &mut PgConnection, email: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM auth.users WHERE lower(email) = lower($1) FOR UPDATE",
        email
    )
    .fetch_optional(tx)
    .await
}

/// Disables (`true`) or re-enables `user`. Disabling ends every session; the sessions a
/// disabled account had stay ended when it is enabled again.
pub async fn set_disabled(
    tx: &mut PgConnection,
    user: Uuid,
    disabled: bool,
) -> sqlx::Result<Vec<RevokedSession>> {
    sqlx::query!(
        "UPDATE auth.users
         SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END, updated_at = now()
         WHERE id = $1",
        user,
        disabled
    )
    .execute(&mut *tx)
    .await?;
    if !disabled {
        return Ok(Vec::new());
    }
    sessions::revoke_all(tx, user, None, Reason::Disabled).await
}

/// Deletions after `after`, at most `limit` of them.
#[tracing::instrument(level = "debug", target = "db.client", name = "db.deleted_users.since", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub async fn deleted_after(
    conn: &mut PgConnection,
    after: i64,
    limit: i64,
) -> sqlx::Result<DeletedUsersPage> {
    let entries = sqlx::query_as!(
        DeletedUser,
        "SELECT seq, user_id, deleted_at FROM auth.deleted_users
         WHERE seq > $1 ORDER BY seq LIMIT $2",
        after,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    let pruned_through = sqlx::query_scalar!("SELECT through FROM auth.deleted_users_pruned")
        .fetch_one(conn)
        .await?;
    Ok(DeletedUsersPage {
        entries,
        pruned_through,
    })
}

/// Removes feed entries older than `retention_seconds`, and records how far it removed.
pub async fn prune_deleted_users(
    conn: &mut PgConnection,
    retention_seconds: u64,
) -> sqlx::Result<u64> {
    let pruned = sqlx::query_scalar!(
        r#"WITH pruned AS (
             DELETE FROM auth.deleted_users
             WHERE deleted_at < now() - make_interval(secs => $1)
             RETURNING seq
           ), moved AS (
             UPDATE auth.deleted_users_pruned
             SET through = greatest(through, (SELECT max(seq) FROM pruned))
             WHERE EXISTS (SELECT 1 FROM pruned)
           )
           SELECT count(*) AS "count!" FROM pruned"#,
        retention_seconds as f64
    )
    .fetch_one(conn)
    .await?;
    Ok(pruned as u64)
}
