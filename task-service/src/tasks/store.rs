//! The SQL of tasks. Every statement is scoped by `user_id`, so no query can reach another
//! user's row. The hot statements are in `sql/`, where the plan tests
//! (`tests/api/plans.rs`) EXPLAIN the same text against skewed and stale statistics.

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::Task;
use super::fields::{TaskDescription, TaskTitle};

/// The `Task` in a row of a statement that returns other columns beside the task's (the
/// record types `query_file!` makes for each statement share no trait to convert through).
macro_rules! task_from_row {
    ($row:ident) => {
        Task {
            id: $row.id,
            user_id: $row.user_id,
            title: $row.title,
            description: $row.description,
            completed: $row.completed,
            created_at: $row.created_at,
            updated_at: $row.updated_at,
            version: $row.version,
        }
    };
}

/// What a listing asks for: newest first, optionally only (in)complete, before `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListFilter {
    pub completed: Option<bool>,
    pub after: Option<i64>,
    pub limit: i64,
}

#[tracing::instrument(target = "db.client", name = "db.tasks.list", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub async fn list(
    conn: &mut PgConnection,
    user: Uuid,
    filter: ListFilter,
) -> sqlx::Result<Vec<Task>> {
    // `id < coalesce(after, max)` keeps one statement per filter shape, each served by its
    // index as a range scan that stops after `limit` rows.
    let after = filter.after.unwrap_or(i64::MAX);
    match filter.completed {
        None => {
            sqlx::query_file_as!(Task, "src/tasks/sql/list.sql", user, after, filter.limit)
                .fetch_all(conn)
                .await
        }
        Some(completed) => {
            sqlx::query_file_as!(
                Task,
                "src/tasks/sql/list_completed.sql",
                user,
                completed,
                after,
                filter.limit
            )
            .fetch_all(conn)
            .await
        }
    }
}

/// The id and version of each task `list` would return, in its order: what tells a kept page
/// (`page_cache`) from a changed one. The same index range and rows as `list`.
#[tracing::instrument(target = "db.client", name = "db.tasks.list_versions", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub async fn list_versions(
    conn: &mut PgConnection,
    user: Uuid,
    filter: ListFilter,
) -> sqlx::Result<Vec<(i64, i64)>> {
    let after = filter.after.unwrap_or(i64::MAX);
    let (ids, versions) = match filter.completed {
        None => {
            let row =
                sqlx::query_file!("src/tasks/sql/list_versions.sql", user, after, filter.limit)
                    .fetch_one(conn)
                    .await?;
            (row.ids, row.versions)
        }
        Some(completed) => {
            let row = sqlx::query_file!(
                "src/tasks/sql/list_completed_versions.sql",
                user,
                completed,
                after,
                filter.limit
            )
            .fetch_one(conn)
            .await?;
            (row.ids, row.versions)
        }
    };
    let mut page: Vec<(i64, i64)> = ids.into_iter().zip(versions).collect();
    // Newest first, as the list is: the aggregate's order is not promised.
    page.sort_unstable_by_key(|&(id, _)| std::cmp::Reverse(id));
    Ok(page)
}

/// How many rows of `tasks.task_counts` hold one user's count: the triggers of migration
/// `0005_task_counts_in_64_rows.sql` add each task to row `id % 64`.
pub const COUNT_ROWS_PER_USER: i32 = 64;

/// Inserts a task unless `user` already holds `max` tasks (`None` then).
///
/// The cap is kept with allowances (migration `0006_cap_allowances.sql`): each of the user's
/// count rows may grow to its `allowed`, and the allowances add up to at most `max`. A create
/// first inserts within the allowance of the row its task lands in, which touches that one row
/// and no other, so a user's creates run side by side. When that row has no allowance left
/// (or none was granted, or under another cap), the create counts under a lock instead and
/// grants new allowances from what is left.
///
/// Inside a caller's transaction (a create with an idempotency key) the attempt within the
/// allowance runs in a savepoint, rolled back when it inserts nothing. Its count row may have
/// changed under it while it waited for the row's lock, and an UPDATE that finds the new
/// version no longer matching keeps that lock to the end of its transaction: held on into the
/// count under a lock, which locks the user's rows from shard 0 up, it would be taken out of
/// order, and two such creates could deadlock. Alone, the attempt's statement ends and
/// releases it.
#[tracing::instrument(target = "db.client", name = "db.tasks.create", skip_all, fields(db.system = "postgresql", db.operation.name = "INSERT", otel.kind = "client"))]
pub async fn create(
    conn: &mut PgConnection,
    user: Uuid,
    title: &TaskTitle,
    description: Option<&TaskDescription>,
    max: i32,
) -> sqlx::Result<Option<Task>> {
    let description = description.map(TaskDescription::as_str);
    let created = if conn.is_in_transaction() {
        let mut attempt = conn.begin().await?;
        let created =
            create_within_allowance(&mut attempt, user, title.as_str(), description, max).await?;
        if created.is_some() {
            attempt.commit().await?;
        } else {
            attempt.rollback().await?;
        }
        created
    } else {
        create_within_allowance(conn, user, title.as_str(), description, max).await?
    };
    if created.is_some() {
        return Ok(created);
    }
    create_counting(conn, user, title.as_str(), description, max).await
}

/// The insert within the allowance of the count row the task lands in; `None` when that row
/// has none left (the task is not inserted).
async fn create_within_allowance(
    conn: &mut PgConnection,
    user: Uuid,
    title: &str,
    description: Option<&str>,
    max: i32,
) -> sqlx::Result<Option<Task>> {
    sqlx::query_file_as!(
        Task,
        "src/tasks/sql/create_within_allowance.sql",
        user,
        title,
        description,
        max
    )
    .fetch_optional(conn)
    .await
}

/// A create of a batch (`creator`): which user, the title, the description.
pub struct NewTaskRow {
    pub user: Uuid,
    pub title: TaskTitle,
    pub description: Option<TaskDescription>,
}

/// Inserts every row of `rows` that fits within its count row's allowance, in one statement
/// and one commit, and returns each inserted task with its row's index in `rows`. A row not
/// returned was not inserted: its count row had no allowance left, and it takes `create`.
///
/// Ids are drawn first and the rows inserted in `(user_id, id % 64)` order: the allowance
/// trigger locks each row's count row as it goes, and every statement that locks several count
/// rows takes them in that order (a count under a lock; since migration 0007 also a delete of
/// many tasks, and the purge), so none of them waits for another in a cycle.
#[tracing::instrument(target = "db.client", name = "db.tasks.create_many", skip_all, fields(db.system = "postgresql", db.operation.name = "INSERT", otel.kind = "client", db.batch.size = rows.len()))]
pub async fn create_many_within_allowance(
    conn: &mut PgConnection,
    rows: &[&NewTaskRow],
    max: i32,
) -> sqlx::Result<Vec<(usize, Task)>> {
    let users: Vec<Uuid> = rows.iter().map(|row| row.user).collect();
    let titles: Vec<&str> = rows.iter().map(|row| row.title.as_str()).collect();
    let descriptions: Vec<Option<&str>> = rows
        .iter()
        .map(|row| row.description.as_ref().map(TaskDescription::as_str))
        .collect();
    let created = sqlx::query_file!(
        "src/tasks/sql/create_many_within_allowance.sql",
        &users,
        &titles as &[&str],
        &descriptions as &[Option<&str>],
        max
    )
    .fetch_all(conn)
    .await?;
    Ok(created
        .into_iter()
        .map(|row| {
            // WITH ORDINALITY counts from 1.
            let index = usize::try_from(row.slot - 1).unwrap_or(usize::MAX);
            let task = task_from_row!(row);
            (index, task)
        })
        .collect())
}

/// The locked path of `create`: locks all of the user's count rows, inserts if their sum is
/// below `max`, and grants each row an allowance from what is left, in one transaction (a
/// savepoint inside the caller's), so that no create within an allowance runs between the count
/// and the new allowances. Every count row is made to exist first: a row created meanwhile would
/// escape the lock. Rows are locked in shard order, as the triggers lock them, so that two
/// creates that count never wait for each other in a cycle.
async fn create_counting(
    conn: &mut PgConnection,
    user: Uuid,
    title: &str,
    description: Option<&str>,
    max: i32,
) -> sqlx::Result<Option<Task>> {
    let mut tx = conn.begin().await?;
    sqlx::query!(
        "INSERT INTO tasks.task_counts (user_id, shard, tasks)
         SELECT $1, shard, 0 FROM generate_series(0, $2 - 1) AS shard
         ON CONFLICT DO NOTHING",
        user,
        COUNT_ROWS_PER_USER
    )
    .execute(&mut *tx)
    .await?;
    // Inserted without an allowance: the triggers count the task and withdraw the user's
    // allowances, granted again below while the rows are still locked. The setting is cleared
    // first because the attempt within an allowance set it for the rest of its transaction,
    // which is the caller's when a create records an idempotency key.
    let created = sqlx::query_as!(
        Task,
        "WITH locked AS (
           SELECT tasks FROM tasks.task_counts WHERE user_id = $1 ORDER BY shard FOR UPDATE
         )
         INSERT INTO tasks.tasks (user_id, title, description)
         SELECT $1, $2, $3
         WHERE set_config('tasks.allowance_cap', '', true) IS NOT NULL
           AND (SELECT coalesce(sum(tasks), 0) FROM locked) < $4
         RETURNING id, user_id, title, description, completed, created_at, updated_at, version",
        user,
        title,
        description,
        i64::from(max)
    )
    .fetch_optional(&mut *tx)
    .await?;
    if created.is_none() {
        tx.rollback().await?;
        return Ok(None);
    }
    // What is left under the cap, shared evenly; each row may grow by its share.
    sqlx::query!(
        "WITH locked AS (
           SELECT shard, tasks FROM tasks.task_counts WHERE user_id = $1 ORDER BY shard FOR UPDATE
         ), room AS (
           SELECT greatest($2::integer - sum(tasks), 0) AS left_over FROM locked
         )
         UPDATE tasks.task_counts c
         SET allowed = l.tasks + room.left_over / $3::integer
                       + CASE WHEN l.shard < room.left_over % $3::integer THEN 1 ELSE 0 END,
             allowed_under = $2
         FROM locked l, room
         WHERE c.user_id = $1 AND c.shard = l.shard",
        user,
        max,
        COUNT_ROWS_PER_USER
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(created)
}

/// The version of task `id` if it is `user`'s: after a conditional write changed nothing, it
/// tells a failed precondition (the task exists) from a missing task.
#[tracing::instrument(target = "db.client", name = "db.tasks.version", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub async fn version(conn: &mut PgConnection, user: Uuid, id: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_file_scalar!("src/tasks/sql/version.sql", id, user)
        .fetch_optional(conn)
        .await
}

#[tracing::instrument(target = "db.client", name = "db.tasks.get", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub async fn get(conn: &mut PgConnection, user: Uuid, id: i64) -> sqlx::Result<Option<Task>> {
    sqlx::query_file_as!(Task, "src/tasks/sql/get.sql", id, user)
        .fetch_optional(conn)
        .await
}

/// The tasks among `(ids[i], users[i])` that exist, in any order: many single reads in one
/// statement (see `reader`). Each pair is a primary-key lookup, checked against its user.
#[tracing::instrument(target = "db.client", name = "db.tasks.get_many", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client", db.batch.size = ids.len()))]
pub async fn get_many(
    conn: &mut PgConnection,
    ids: &[i64],
    users: &[Uuid],
) -> sqlx::Result<Vec<Task>> {
    sqlx::query_file_as!(Task, "src/tasks/sql/get_many.sql", ids, users)
        .fetch_all(conn)
        .await
}

/// What an update changes; `None` leaves a field as it is.
pub struct Changes<'a> {
    pub title: Option<&'a TaskTitle>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<&'a TaskDescription>>,
    pub completed: Option<bool>,
}

/// A task as an update left it.
pub struct Updated {
    pub task: Task,
    /// Whether this update is what completed it (it was not completed before): what
    /// `tasks_completed_total` counts, not every write that sends `completed: true`.
    pub newly_completed: bool,
}

/// Applies `changes` if the task is at one of `versions` (any version when `None`);
/// `updated_at` (and, by trigger, `version`) move only when a value really changes, so an
/// update that sends the values the task already has (or nothing at all) leaves the task as it
/// was. The condition is part of the statement: of editors racing with one ETag, one wins.
/// The task is joined to itself (`was`, the row as the statement's snapshot has it) to tell
/// whether it was completed before. Only updates racing on one task (one waiting for the
/// other's row lock) can see a stale `was`: two completions may both count, and a completion
/// that waited for a reopen may not. Exact counts would take a row lock before the update
/// (`FOR NO KEY UPDATE`), more than the metric is worth on every update.
#[tracing::instrument(target = "db.client", name = "db.tasks.update", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
pub async fn update(
    conn: &mut PgConnection,
    user: Uuid,
    id: i64,
    changes: Changes<'_>,
    versions: Option<&[i64]>,
) -> sqlx::Result<Option<Updated>> {
    let set_description = changes.description.is_some();
    let description = changes.description.flatten().map(TaskDescription::as_str);
    // Every SET expression sees the row as it was, so the CASE compares new with old.
    let row = sqlx::query_file!(
        "src/tasks/sql/update.sql",
        id,
        user,
        changes.title.map(TaskTitle::as_str),
        set_description,
        description,
        changes.completed,
        versions
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| Updated {
        task: task_from_row!(row),
        newly_completed: row.newly_completed,
    }))
}

/// True when the task existed (and belonged to `user`) at one of `versions` (any when
/// `None`), and is now gone.
#[tracing::instrument(target = "db.client", name = "db.tasks.delete", skip_all, fields(db.system = "postgresql", db.operation.name = "DELETE", otel.kind = "client"))]
pub async fn delete(
    conn: &mut PgConnection,
    user: Uuid,
    id: i64,
    versions: Option<&[i64]>,
) -> sqlx::Result<bool> {
    let result = sqlx::query_file!("src/tasks/sql/delete.sql", id, user, versions)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// The first answer to a create with an idempotency key.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub fingerprint: Vec<u8>,
    pub status: i16,
    pub etag: String,
    pub body: String,
}

/// Records `answer` as the answer to `key` of `user` for `ttl_seconds`, unless a live record
/// of that key exists: `false` then. A record being written by a concurrent transaction is
/// waited for (the unique index makes this insert wait), so of concurrent requests with one
/// key exactly one records its answer. An expired record is replaced.
#[tracing::instrument(target = "db.client", name = "db.idempotency_keys.claim", skip_all, fields(db.system = "postgresql", db.operation.name = "INSERT", otel.kind = "client"))]
pub async fn claim_key(
    conn: &mut PgConnection,
    user: Uuid,
    key: &str,
    answer: &StoredAnswer,
    ttl_seconds: u64,
) -> sqlx::Result<bool> {
    let claimed = sqlx::query_scalar!(
        r#"INSERT INTO tasks.idempotency_keys AS k
             (user_id, key, fingerprint, status, etag, body, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
           ON CONFLICT (user_id, key) DO UPDATE
             SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status,
                 etag = EXCLUDED.etag, body = EXCLUDED.body,
                 created_at = now(), expires_at = EXCLUDED.expires_at
             WHERE k.expires_at <= now()
           RETURNING true AS "claimed!""#,
        user,
        key,
        answer.fingerprint,
        answer.status,
        answer.etag,
        answer.body,
        ttl_seconds as f64
    )
    .fetch_optional(conn)
    .await?;
    Ok(claimed.is_some())
}

/// The live record of `key` of `user`, if there is one.
#[tracing::instrument(target = "db.client", name = "db.idempotency_keys.get", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub async fn stored_answer(
    conn: &mut PgConnection,
    user: Uuid,
    key: &str,
) -> sqlx::Result<Option<StoredAnswer>> {
    sqlx::query_as!(
        StoredAnswer,
        "SELECT fingerprint, status, etag, body FROM tasks.idempotency_keys
         WHERE user_id = $1 AND key = $2 AND expires_at > now()",
        user,
        key
    )
    .fetch_optional(conn)
    .await
}

/// Deletes up to `batch` expired idempotency keys, through their `expires_at` index.
pub async fn delete_expired_keys(conn: &mut PgConnection, batch: i64) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "DELETE FROM tasks.idempotency_keys WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM tasks.idempotency_keys WHERE expires_at < now() LIMIT $1))",
        batch
    )
    .execute(conn)
    .await?
    .rows_affected())
}
