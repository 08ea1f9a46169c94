//! Waiting, in tests, for a state another task or process reaches in its own time.

use std::time::Duration;

/// Polls `check` every 50 ms until it returns true or `within` passes; returns whether it did.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until at least `n` backends of `db`'s database wait for a lock, up to `within`;
/// whether they did. The database is the test's own, so they are the test's statements (by
/// database rather than by backend: through a pooler in transaction mode, a client's statements
/// may run on any of its server connections).
pub async fn statements_waiting_for_locks(db: &sqlx::PgPool, n: i64, within: Duration) -> bool {
    eventually(within, || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db)
        .await
        .expect("pg_stat_activity answers")
            >= n
    })
    .await
}
