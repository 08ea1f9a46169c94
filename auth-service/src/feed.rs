//! The feeds on the admin port, which task-service polls: revoked sessions, and deleted users
//! (whose tasks it purges). Also this replica's own poll of the sessions table (so a logout on
//! another replica is honoured here too), and the periodic cleanup of all three tables.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use common::db::Db;
use common::revocation::{OLDEST_OPEN_HEADER, RevokedSessions, spawn_poller};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::account::store as accounts;
use crate::sessions::store;
use common::deleted_users::{DeletedUsersPage, PAGE_MAX as DELETED_USERS_PAGE_MAX};

#[derive(Deserialize)]
struct FeedQuery {
    since: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct DeletedUsersQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

/// `GET /internal/revoked-sessions?since=<RFC 3339>`: sessions revoked at or after `since`
/// whose access tokens have not all expired yet; without `since`, all of them.
/// `GET /internal/deleted-users?after=<seq>&limit=<n>`: deletions with a greater `seq`, oldest
/// first (at most 1000 a page), and how far retention has pruned the feed.
pub fn admin_routes(db: Db) -> Router {
    Router::new()
        .route("/internal/revoked-sessions", get(revoked_sessions))
        .route(common::deleted_users::PATH, get(deleted_users))
        .with_state(db)
}

async fn deleted_users(
    State(db): State<Db>,
    query: Result<
        axum::extract::Query<DeletedUsersQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<axum::Json<DeletedUsersPage>, common::Problem> {
    let axum::extract::Query(query) =
        query.map_err(|e| common::Problem::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(DELETED_USERS_PAGE_MAX);
    if !(1..=DELETED_USERS_PAGE_MAX).contains(&limit) {
        return Err(common::Problem::bad_request(format!(
            "limit must be 1..={DELETED_USERS_PAGE_MAX}"
        )));
    }
    let mut conn = db
        .acquire()
        .await
        .map_err(|e| common::db::problem_for(&e))?;
    let page = accounts::deleted_after(&mut conn, query.after, limit)
        .await
        .map_err(|e| common::db::problem_for(&e))?;
    Ok(axum::Json(page))
}

/// The sessions as the body; when the oldest transaction open on the database began in the
/// `OLDEST_OPEN_HEADER` (a header, so that pollers of an older release read the body as before).
async fn revoked_sessions(
    State(db): State<Db>,
    query: Result<axum::extract::Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, common::Problem> {
    let axum::extract::Query(query) =
        query.map_err(|e| common::Problem::bad_request(e.body_text()))?;
    let mut conn = db
        .acquire()
        .await
        .map_err(|e| common::db::problem_for(&e))?;
    let page = store::revocation_feed(&mut conn, query.since)
        .await
        .map_err(|e| common::db::problem_for(&e))?;
    let mut response = axum::Json(page.sessions).into_response();
    if let Some(open) = page.oldest_open {
        let stamp = open.to_rfc3339_opts(SecondsFormat::Micros, true);
        if let Ok(value) = HeaderValue::from_str(&stamp) {
            response.headers_mut().insert(OLDEST_OPEN_HEADER, value);
        }
    }
    Ok(response)
}

/// Keeps `cache` in step with the sessions table.
pub fn spawn_own_poller(
    db: Db,
    cache: RevokedSessions,
    interval: Duration,
    stop: CancellationToken,
) {
    spawn_poller(cache, interval, stop, move |since| {
        let db = db.clone();
        async move {
            let mut conn = db.acquire().await?;
            store::revocation_feed(&mut conn, since).await
        }
    });
}

/// Deletes expired sessions, tokens and limit counters, and deleted-users entries past their
/// retention, every `interval`, on one replica at a time.
pub fn spawn_cleanup(
    db: Db,
    interval: Duration,
    deleted_users_retention_seconds: u64,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match cleanup_once(&db, deleted_users_retention_seconds).await {
                Ok(Some(0)) => {}
                Ok(Some(deleted)) => tracing::info!(deleted, "expired sessions and tokens deleted"),
                Ok(None) => tracing::debug!("cleanup: another replica holds the lock"),
                Err(error) => tracing::warn!(%error, "cleanup failed"),
            }
        }
    });
}

async fn cleanup_once(db: &Db, deleted_users_retention_seconds: u64) -> sqlx::Result<Option<u64>> {
    let mut tx = db.begin().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('auth-cleanup'))")
            .fetch_one(&mut *tx)
            .await?;
    if !locked {
        return Ok(None);
    }
    let deleted = store::delete_expired(&mut tx).await?
        + crate::limits::delete_expired(&mut tx).await?
        + accounts::prune_deleted_users(&mut tx, deleted_users_retention_seconds).await?;
    tx.commit().await?;
    Ok(Some(deleted))
}
