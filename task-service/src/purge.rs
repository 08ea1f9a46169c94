//! Purges the tasks of deleted accounts. auth-service lists deletions on its admin port (the
//! deleted-users feed); this service reads it with a cursor kept in its own schema
//! (`tasks.deleted_users_cursor`) and deletes those users' tasks itself: it never reads the
//! `auth` schema, and `tasks.user_id` has no foreign key to cascade from.
//!
//! - A deletion made while every replica was down is purged when one returns: the cursor is in
//!   the database, and the feed keeps entries for DELETED_USERS_RETENTION_SECONDS.
//! - Replicas purge at once safely: purging a user twice deletes nothing the second time, and
//!   the cursor only moves forward.
//! - The cursor does not move past an entry until it has settled: until no replica can still be
//!   accepting that user's tokens (it learns of the revoked sessions within the revocation poll,
//!   and turns unready past REVOCATION_MAX_STALENESS_SECONDS) and no request with one can still
//!   be running (REQUEST_TIMEOUT_MS): the sum of the two settings. Meanwhile each poll purges
//!   the entry again, so a task created by a request already in flight at the deletion is
//!   purged too.
//! - Entries commit in `seq` order (auth-service's `account::store::record_deletion`), so an
//!   entry the cursor has moved past can no longer appear behind it (once no auth-service pod
//!   of an earlier release, which took its `seq` first, is still deleting accounts).

use std::time::Duration;

use chrono::Utc;
use common::db::Db;
use common::deleted_users::{DeletedUsersPage, PAGE_MAX, PATH};
use prometheus::{IntCounter, IntGauge, Registry};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A poll that takes longer than this is abandoned and retried at the next tick.
const FEED_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PurgeMetrics {
    purged: IntCounter,
    failures: IntCounter,
    cursor: IntGauge,
    missed: IntGauge,
}

impl PurgeMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let purged = IntCounter::new(
            "tasks_purged_total",
            "Tasks deleted because their account was deleted.",
        )?;
        let failures = IntCounter::new(
            "deleted_users_poll_failures_total",
            "Polls of auth-service's deleted-users feed (or the purges they led to) that failed.",
        )?;
        let cursor = IntGauge::new(
            "deleted_users_cursor",
            "The deleted-users feed seq up to which every deletion is purged.",
        )?;
        let missed = IntGauge::new(
            "deleted_users_feed_missed",
            "1 when the feed had pruned deletions this service never read: their tasks need the README's procedure.",
        )?;
        for metric in [&purged, &failures] {
            registry.register(Box::new(metric.clone()))?;
        }
        for metric in [&cursor, &missed] {
            registry.register(Box::new(metric.clone()))?;
        }
        Ok(Self {
            purged,
            failures,
            cursor,
            missed,
        })
    }
}

pub struct Purger {
    client: reqwest::Client,
    feed_url: String,
    db: Db,
    settle: chrono::Duration,
    metrics: PurgeMetrics,
    /// This replica's view of the durable cursor; `None` until read from the database.
    cursor: Option<i64>,
}

impl Purger {
    /// `settle`: how long after a deletion its entry stays in every poll's purge.
    pub fn new(
        auth_admin_url: &str,
        db: Db,
        settle: Duration,
        metrics: PurgeMetrics,
    ) -> anyhow::Result<Self> {
        let settle = chrono::Duration::from_std(settle)?;
        Ok(Self {
            client: reqwest::Client::builder().timeout(FEED_TIMEOUT).build()?,
            feed_url: format!("{}{PATH}", auth_admin_url.trim_end_matches('/')),
            db,
            settle,
            metrics,
            cursor: None,
        })
    }

    /// Polls every `interval` until `stop`.
    pub fn spawn(mut self, interval: Duration, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                if let Err(error) = self.poll_once().await {
                    self.metrics.failures.inc();
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "deleted-users poll failed; retrying at the next one"
                    );
                }
            }
        });
    }

    /// Reads every page after the cursor, purges each, and moves the cursor past what has
    /// settled.
    pub async fn poll_once(&mut self) -> anyhow::Result<()> {
        let cursor = match self.cursor {
            Some(cursor) => cursor,
            None => read_cursor(&self.db).await?,
        };
        self.cursor = Some(cursor);
        let cutoff = Utc::now() - self.settle;
        let (mut after, mut settled, mut settling) = (cursor, cursor, true);
        loop {
            let page = self.fetch(after).await?;
            if page.pruned_through > cursor && self.metrics.missed.get() == 0 {
                self.metrics.missed.set(1);
                tracing::error!(
                    cursor,
                    pruned_through = page.pruned_through,
                    "the deleted-users feed pruned deletions this service never read: their tasks were not purged (README: missed deletions)"
                );
            }
            let users: Vec<Uuid> = page.entries.iter().map(|e| e.user_id).collect();
            if !users.is_empty() {
                let purged = purge(&self.db, &users).await?;
                if purged > 0 {
                    self.metrics.purged.inc_by(purged);
                    tracing::info!(
                        users = users.len(),
                        tasks = purged,
                        "deleted accounts' tasks purged"
                    );
                }
            }
            for entry in &page.entries {
                settling &= entry.deleted_at < cutoff;
                if settling {
                    settled = entry.seq;
                }
            }
            match page.entries.last() {
                Some(last) if page.entries.len() as i64 == PAGE_MAX => after = last.seq,
                _ => break,
            }
        }
        if settled > cursor {
            advance_cursor(&self.db, settled).await?;
            self.cursor = Some(settled);
        }
        self.metrics.cursor.set(self.cursor.unwrap_or_default());
        Ok(())
    }

    async fn fetch(&self, after: i64) -> reqwest::Result<DeletedUsersPage> {
        self.client
            .get(format!("{}?after={after}&limit={PAGE_MAX}", self.feed_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }
}

#[tracing::instrument(level = "debug", target = "db.client", name = "db.deleted_users_cursor.get", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
async fn read_cursor(db: &Db) -> sqlx::Result<i64> {
    let mut conn = db.acquire().await?;
    // The row is made again, at 0, if it went (an operator's DELETE, a restore without it):
    // `migrate` would not remake it, and without it the purge would stop for good. From 0 the
    // feed's deletions are purged again, which deletes nothing twice.
    sqlx::query_scalar!(
        r#"WITH made AS (
             INSERT INTO tasks.deleted_users_cursor (last_seq) VALUES (0)
             ON CONFLICT DO NOTHING RETURNING last_seq
           )
           SELECT last_seq AS "last_seq!" FROM made
           UNION ALL SELECT last_seq FROM tasks.deleted_users_cursor"#
    )
    .fetch_one(&mut *conn)
    .await
}

#[tracing::instrument(level = "debug", target = "db.client", name = "db.deleted_users_cursor.advance", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
async fn advance_cursor(db: &Db, to: i64) -> sqlx::Result<()> {
    let mut conn = db.acquire().await?;
    sqlx::query!(
        "UPDATE tasks.deleted_users_cursor SET last_seq = greatest(last_seq, $1)",
        to
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes every task of `users`, and what the schema keeps about them (their task counts and
/// idempotency keys); the count of tasks deleted. Public for the lock-order test
/// (`tests/api/count_row_lock_order.rs`); the service calls it from `poll_once`.
#[tracing::instrument(level = "debug", target = "db.client", name = "db.tasks.purge", skip_all, fields(db.system = "postgresql", db.operation.name = "DELETE", otel.kind = "client"))]
pub async fn purge(db: &Db, users: &[Uuid]) -> sqlx::Result<u64> {
    let mut conn = db.acquire().await?;
    let tasks = sqlx::query!("DELETE FROM tasks.tasks WHERE user_id = ANY($1)", users)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    // In key order, as every statement that locks several count rows takes them (migration
    // 0007): a batch of creates for one of these users may still be in flight.
    sqlx::query!(
        "DELETE FROM tasks.task_counts c
         USING (SELECT user_id, shard FROM tasks.task_counts WHERE user_id = ANY($1)
                ORDER BY user_id, shard FOR UPDATE) locked
         WHERE c.user_id = locked.user_id AND c.shard = locked.shard",
        users
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM tasks.idempotency_keys WHERE user_id = ANY($1)",
        users
    )
    .execute(&mut *conn)
    .await?;
    Ok(tasks)
}
