//! The SQL of tasks. Every statement is scoped by `user_id`, so no query can reach another
//! user's row.

use sqlx::PgConnection;
use uuid::Uuid;

use super::Task;
use super::fields::{TaskDescription, TaskTitle};

/// What a listing asks for: newest first, optionally only (in)complete, before `after`.
#[derive(Debug, Clone, Copy)]
pub struct ListFilter {
    pub completed: Option<bool>,
    pub after: Option<i64>,
    pub limit: i64,
}

#[tracing::instrument(name = "db.tasks.list", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
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
            sqlx::query_as!(
                Task,
                "SELECT id, user_id, title, description, completed, created_at, updated_at
                 FROM tasks.tasks WHERE user_id = $1 AND id < $2
                 ORDER BY id DESC LIMIT $3",
                user,
                after,
                filter.limit
            )
            .fetch_all(conn)
            .await
        }
        Some(completed) => {
            sqlx::query_as!(
                Task,
                "SELECT id, user_id, title, description, completed, created_at, updated_at
                 FROM tasks.tasks WHERE user_id = $1 AND completed = $2 AND id < $3
                 ORDER BY id DESC LIMIT $4",
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

#[tracing::instrument(name = "db.tasks.create", skip_all, fields(db.system = "postgresql", db.operation.name = "INSERT", otel.kind = "client"))]
pub async fn create(
    conn: &mut PgConnection,
    user: Uuid,
    title: &TaskTitle,
    description: Option<&TaskDescription>,
) -> sqlx::Result<Task> {
    sqlx::query_as!(
        Task,
        "INSERT INTO tasks.tasks (user_id, title, description) VALUES ($1, $2, $3)
         RETURNING id, user_id, title, description, completed, created_at, updated_at",
        user,
        title.as_str(),
        description.map(TaskDescription::as_str)
    )
    .fetch_one(conn)
    .await
}

#[tracing::instrument(name = "db.tasks.get", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client"))]
pub async fn get(conn: &mut PgConnection, user: Uuid, id: i64) -> sqlx::Result<Option<Task>> {
    sqlx::query_as!(
        Task,
        "SELECT id, user_id, title, description, completed, created_at, updated_at
         FROM tasks.tasks WHERE id = $1 AND user_id = $2",
        id,
        user
    )
    .fetch_optional(conn)
    .await
}

/// The tasks among `(ids[i], users[i])` that exist, in any order: many single reads in one
/// statement (see `reader`). Each pair is a primary-key lookup, checked against its user.
#[tracing::instrument(name = "db.tasks.get_many", skip_all, fields(db.system = "postgresql", db.operation.name = "SELECT", otel.kind = "client", db.batch.size = ids.len()))]
pub async fn get_many(
    conn: &mut PgConnection,
    ids: &[i64],
    users: &[Uuid],
) -> sqlx::Result<Vec<Task>> {
    sqlx::query_as!(
        Task,
        "SELECT t.id, t.user_id, t.title, t.description, t.completed, t.created_at, t.updated_at
         FROM unnest($1::int8[], $2::uuid[]) AS wanted(id, user_id)
         JOIN tasks.tasks t ON t.id = wanted.id AND t.user_id = wanted.user_id",
        ids,
        users
    )
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

/// Applies `changes`; `updated_at` moves only when a value really changes, so an update that
/// sends the values the task already has (or nothing at all) leaves the task as it was.
#[tracing::instrument(name = "db.tasks.update", skip_all, fields(db.system = "postgresql", db.operation.name = "UPDATE", otel.kind = "client"))]
pub async fn update(
    conn: &mut PgConnection,
    user: Uuid,
    id: i64,
    changes: Changes<'_>,
) -> sqlx::Result<Option<Task>> {
    let set_description = changes.description.is_some();
    let description = changes.description.flatten().map(TaskDescription::as_str);
    // Every SET expression sees the row as it was, so the CASE compares new with old.
    sqlx::query_as!(
        Task,
        "UPDATE tasks.tasks SET
             title = coalesce($3, title),
             description = CASE WHEN $4 THEN $5 ELSE description END,
             completed = coalesce($6, completed),
             updated_at = CASE
                 WHEN (coalesce($3, title), CASE WHEN $4 THEN $5 ELSE description END,
                       coalesce($6, completed))
                      IS DISTINCT FROM (title, description, completed)
                 THEN now() ELSE updated_at END
         WHERE id = $1 AND user_id = $2
         RETURNING id, user_id, title, description, completed, created_at, updated_at",
        id,
        user,
        changes.title.map(TaskTitle::as_str),
        set_description,
        description,
        changes.completed
    )
    .fetch_optional(conn)
    .await
}

/// True when the task existed (and belonged to `user`).
#[tracing::instrument(name = "db.tasks.delete", skip_all, fields(db.system = "postgresql", db.operation.name = "DELETE", otel.kind = "client"))]
pub async fn delete(conn: &mut PgConnection, user: Uuid, id: i64) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        "DELETE FROM tasks.tasks WHERE id = $1 AND user_id = $2",
        id,
        user
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}
