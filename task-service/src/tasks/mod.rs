//! Tasks: the six endpoints of `/api/v1/tasks`. Owns `tasks.tasks`.

pub mod body;
pub mod coalesce;
pub mod conditional;
pub mod creator;
pub mod fields;
pub mod idempotency;
pub mod page_cache;
pub mod reader;
pub mod store;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use chrono::{DateTime, Utc};
use common::auth::AuthUser;
use common::extract::{Json, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::error::{Error, Result};
use conditional::{ClientHeaders, IfMatch};
use fields::{Patch, TaskDescription, TaskTitle};
use idempotency::{Created, IdempotencyKey};
use store::{Changes, ListFilter};

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tasks", get(list).post(create))
        .route("/api/v1/tasks/", get(list).post(create))
        .route("/api/v1/tasks/{id}", get(read).put(update).delete(remove))
        .route("/api/v1/tasks/{id}/complete", patch(complete))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Task {
    #[schema(example = 42)]
    pub id: i64,
    pub user_id: Uuid,
    #[schema(example = "Buy milk")]
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    #[serde(serialize_with = "common::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "common::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Behind the `ETag` header, not in the body.
    #[serde(skip)]
    pub version: i64,
}

impl Task {
    /// This task as an answer: its JSON with its strong `ETag`.
    fn answer(self, status: StatusCode) -> Response {
        let json = match body::task(&self) {
            Ok(json) => json,
            Err(error) => return error.into_response(),
        };
        let headers = [
            (header::ETAG, conditional::etag(self.version)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ];
        (status, headers, json).into_response()
    }
}

#[derive(Deserialize, ToSchema)]
pub struct NewTask {
    /// 1..=200 characters as sent, no U+0000, not only whitespace. Surrounding whitespace is
    /// trimmed: `"  Buy milk "` is stored as `"Buy milk"`.
    // The pattern is `fields::TITLE_PATTERN` (attributes take no constants; a test compares).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\u0000\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\u0000]*$",
        example = "Buy milk"
    )]
    pub title: String,
    /// At most 1000 characters, no U+0000.
    #[schema(max_length = 1000, pattern = r"^[^\u0000]*$")]
    pub description: Option<String>,
}

/// A partial update: fields left out stay as they are.
#[derive(Deserialize, ToSchema)]
pub struct TaskUpdate {
    /// 1..=200 characters as sent, no U+0000, not only whitespace; trimmed like a new task's
    /// title; `null` is refused.
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\u0000]*[^\u0000\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\u0000]*$")]
    pub title: Patch<String>,
    /// At most 1000 characters, no U+0000; `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 1000, pattern = r"^[^\u0000]*$")]
    pub description: Patch<String>,
    /// `null` is refused.
    #[serde(default)]
    #[schema(value_type = bool)]
    pub completed: Patch<bool>,
}

#[derive(Deserialize, ToSchema)]
pub struct Completion {
    pub completed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    #[schema(example = "Task deleted successfully")]
    pub message: &'static str,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only completed (`true`) or open (`false`) tasks.
    pub completed: Option<bool>,
    /// Page size, 1..=500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Keyset cursor: only tasks with an id below this one (the `Link` header supplies it).
    pub after: Option<i64>,
}

fn invalid(reason: String) -> Error {
    Error::Invalid(reason)
}

/// The caller's tasks, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of tasks, newest first; a `Link: <…>; rel=\"next\"` header points at the next page when there may be one", body = [Task],
            headers(("link" = String, description = "Relative URL of the next page, rel=\"next\""),
                    ("etag" = String, description = "Weak ETag of this page: changes when any task on it does, or which tasks are on it"))),
        (status = 304, description = "`If-None-Match` matched the page's ETag: unchanged, no body",
            headers(("etag" = String, description = "The page's weak ETag"))),
        (status = 401, description = "Missing or invalid access token", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "missing bearer token"))),
        (status = 422, description = "Bad query (limit outside 1..=500, non-boolean completed, non-integer after)", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(422, "limit must be between 1 and 500"))),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    request_headers: ClientHeaders,
    Query(query): Query<ListQuery>,
) -> Result<Response> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(invalid(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let filter = ListFilter {
        completed: query.completed,
        after: query.after,
        limit,
    };
    let page = state.pages.page(&state.db, user.user_id, filter).await?;
    let mut headers = HeaderMap::new();
    if let Some((last_id, _)) = page
        .tasks
        .last()
        .filter(|_| page.tasks.len() as i64 == limit)
    {
        headers.insert(header::LINK, next_link(filter, *last_id));
    }
    let etag = page.etag(&format!(
        "{:?}|{:?}|{limit}",
        filter.completed, filter.after
    ));
    let unchanged = request_headers.none_match_hits(&etag);
    headers.insert(header::ETAG, etag);
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok((headers, page.body.clone()).into_response())
}

/// `</api/v1/tasks?…&after=<last id>>; rel="next"`, keeping the filter and page size.
fn next_link(filter: ListFilter, last_id: i64) -> HeaderValue {
    let mut url = format!("/api/v1/tasks?limit={}&after={last_id}", filter.limit);
    if let Some(completed) = filter.completed {
        url.push_str(&format!("&completed={completed}"));
    }
    HeaderValue::from_str(&format!("<{url}>; rel=\"next\""))
        .expect("digits, letters and punctuation are a valid header value")
}

/// Creates a task.
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    tag = "tasks",
    request_body = NewTask,
    params(("idempotency-key" = Option<String>, Header, description = "1..=255 visible ASCII characters, the caller's own, remembered IDEMPOTENCY_KEY_TTL_SECONDS (24 h): a retry with the same key and body answers what the first call answered and creates nothing")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; with an `Idempotency-Key` seen before (same body), the first call's answer again, with `Idempotent-Replayed: true`", body = Task,
            headers(("etag" = String, description = "The task's strong ETag"),
                    ("idempotent-replayed" = String, description = "`true` on a replayed answer"))),
        (status = 401, description = "Missing or invalid access token", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(401, "missing bearer token"))),
        (status = 409, description = "The user holds TASKS_MAX_PER_USER tasks already; deleting one makes room", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(409, "a user holds at most 10000 tasks (TASKS_MAX_PER_USER); delete some to make room"))),
        common::openapi::BodyErrors,
        (status = 422, description = "Malformed body, invalid title/description, an invalid `Idempotency-Key`, or a key used before with another body", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(422, "title must contain a character other than whitespace"))),
        (status = 503, description = "Database saturated or unreachable, or the Idempotency-Key expired while the request ran; see Retry-After", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(503, "the Idempotency-Key expired while this request ran; retry"))),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: ClientHeaders,
    Json(body): Json<NewTask>,
) -> Result<Response> {
    let key = IdempotencyKey::from_values(&headers.idempotency_key).map_err(invalid)?;
    let fingerprint = key
        .as_ref()
        .map(|_| idempotency::fingerprint(&body.title, body.description.as_deref()));
    let title = TaskTitle::parse(body.title).map_err(invalid)?;
    let description = body
        .description
        .map(TaskDescription::parse)
        .transpose()
        .map_err(invalid)?;
    let limits = state.limits;
    let (Some(key), Some(fingerprint)) = (key, fingerprint) else {
        let task = state
            .creator
            .create(user.user_id, title, description)
            .await?
            .ok_or(Error::TooManyTasks {
                max: limits.max_per_user,
            })?;
        state.metrics.created.inc();
        state.pages.forget(user.user_id);
        return Ok(task.answer(StatusCode::CREATED));
    };
    let created = idempotency::create(
        &state.db,
        user.user_id,
        &key,
        fingerprint,
        &title,
        description.as_ref(),
        limits.max_per_user,
        limits.idempotency_key_ttl_seconds,
    )
    .await?;
    match created {
        Created::New(task) => {
            state.metrics.created.inc();
            state.pages.forget(user.user_id);
            Ok(task.answer(StatusCode::CREATED))
        }
        Created::Replayed(first) => Ok(replay(first)),
    }
}

/// The recorded first answer to a create, sent again to a retry.
fn replay(first: store::StoredAnswer) -> Response {
    let status = StatusCode::from_u16(first.status as u16).unwrap_or(StatusCode::CREATED);
    let mut response = (status, first.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(etag) = HeaderValue::from_str(&first.etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// One task of the caller's.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, description = "Task id"),
           ("if-none-match" = Option<String>, Header, description = "ETags the client holds: a match is 304"),
           ("if-match" = Option<String>, Header, description = "ETags the task must have (`*`: any): otherwise 412")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The task", body = Task,
            headers(("etag" = String, description = "The task's strong ETag"))),
        (status = 304, description = "`If-None-Match` matched: unchanged, no body",
            headers(("etag" = String, description = "The task's strong ETag"))),
        crate::openapi::TaskAccessErrors,
        (status = 412, description = "`If-Match` named no ETag the task has now", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(412, "the task has changed since the ETag in If-Match; GET it again"))),
        (status = 422, description = "The id is not an integer", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(422, "Invalid URL: Cannot parse `abc` to a `i64`"))),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    user: AuthUser,
    headers: ClientHeaders,
    Path(id): Path<i64>,
) -> Result<Response> {
    let task = state
        .reader
        .get(user.user_id, id)
        .await?
        .ok_or(Error::NotFound)?;
    // RFC 9110 §13.2.2: If-Match first (412), then If-None-Match (304 for a read).
    if !headers.if_match().admits(task.version) {
        return Err(Error::PreconditionFailed);
    }
    let etag = conditional::etag(task.version);
    if headers.none_match_hits(&etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(task.answer(StatusCode::OK))
}

/// Changes the fields sent; the others stay.
#[utoipa::path(
    put,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, description = "Task id"), ("if-match" = Option<String>, Header, description = "ETags the client's copy may have (`*`: any): otherwise 412 and nothing changes"), ("if-none-match" = Option<String>, Header, description = "ETags the task must not have (`*`: the task must not exist): a match is 412 and nothing changes")),
    request_body = TaskUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated task", body = Task,
            headers(("etag" = String, description = "The task's strong ETag"))),
        crate::openapi::TaskAccessErrors,
        (status = 412, description = "`If-Match` named no ETag the task has now, or `If-None-Match` named its current one (or `*`): nothing changed", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(412, "the task has changed since the ETag in If-Match; GET it again"))),
        common::openapi::BodyErrors,
        (status = 422, description = "Malformed body, invalid field, or null title/completed", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(422, "title must not be null"))),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    headers: ClientHeaders,
    Path(id): Path<i64>,
    Json(body): Json<TaskUpdate>,
) -> Result<Response> {
    let title = match body.title {
        Patch::Absent => None,
        Patch::Null => return Err(invalid("title must not be null".into())),
        Patch::Value(raw) => Some(TaskTitle::parse(raw).map_err(invalid)?),
    };
    let description = match body.description {
        Patch::Absent => None,
        Patch::Null => Some(None),
        Patch::Value(raw) => Some(Some(TaskDescription::parse(raw).map_err(invalid)?)),
    };
    let completed = match body.completed {
        Patch::Absent => None,
        Patch::Null => return Err(invalid("completed must not be null".into())),
        Patch::Value(value) => Some(value),
    };
    let changes = Changes {
        title: title.as_ref(),
        description: description.as_ref().map(Option::as_ref),
        completed,
    };
    let mut conn = state.db.acquire().await?;
    let if_match = write_condition(&mut conn, &headers, user, id).await?;
    let updated = store::update(&mut conn, user.user_id, id, changes, if_match.versions()).await;
    let updated = match state.db.observe(updated)? {
        Some(updated) => updated,
        None => return Err(unmet(&mut conn, user, id, &if_match).await),
    };
    Ok(answer_update(&state, user, updated))
}

/// An update's answer; `tasks_completed_total` counts the task if this update completed it (a
/// write that re-sends `completed: true`, as a form saving a completed task's new title does,
/// completes nothing).
fn answer_update(state: &AppState, user: AuthUser, updated: store::Updated) -> Response {
    state.pages.forget(user.user_id);
    if updated.newly_completed {
        state.metrics.completed.inc();
    }
    updated.task.answer(StatusCode::OK)
}

/// The condition a write runs under: `If-Match` as sent and, when the request also carries
/// `If-None-Match` (RFC 9110 §13.1.2: a write must not happen when it matches), that header
/// checked against the task's version now. A match, or `*` (the task exists), is 412; otherwise
/// the write runs only at the version checked, so a change in between is a 412 too, never a
/// write the header forbade.
async fn write_condition(
    conn: &mut sqlx::PgConnection,
    headers: &ClientHeaders,
    user: AuthUser,
    id: i64,
) -> Result<IfMatch> {
    let if_match = headers.if_match();
    if !headers.has_if_none_match() {
        return Ok(if_match);
    }
    let current = store::version(conn, user.user_id, id)
        .await?
        .ok_or(Error::NotFound)?;
    if !if_match.admits(current) {
        return Err(Error::PreconditionFailed);
    }
    if headers.none_match_hits(&conditional::etag(current)) {
        return Err(Error::NoneMatchFailed);
    }
    Ok(IfMatch::CheckedAt(current))
}

/// Why a conditional write changed nothing: no such task of the caller's (404, whatever the
/// condition), or a task at a version `If-Match` did not name, or no longer at the one
/// `If-None-Match` was checked against (412).
async fn unmet(
    conn: &mut sqlx::PgConnection,
    user: AuthUser,
    id: i64,
    if_match: &IfMatch,
) -> Error {
    if if_match.versions().is_none() {
        return Error::NotFound;
    }
    match store::version(conn, user.user_id, id).await {
        Ok(Some(_)) if matches!(if_match, IfMatch::CheckedAt(_)) => Error::NoneMatchFailed,
        Ok(Some(_)) => Error::PreconditionFailed,
        Ok(None) => Error::NotFound,
        Err(error) => Error::Database(error),
    }
}

/// Marks a task completed or not.
#[utoipa::path(
    patch,
    path = "/api/v1/tasks/{id}/complete",
    tag = "tasks",
    params(("id" = i64, Path, description = "Task id"), ("if-match" = Option<String>, Header, description = "ETags the client's copy may have (`*`: any): otherwise 412 and nothing changes"), ("if-none-match" = Option<String>, Header, description = "ETags the task must not have (`*`: the task must not exist): a match is 412 and nothing changes")),
    request_body = Completion,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated task", body = Task,
            headers(("etag" = String, description = "The task's strong ETag"))),
        crate::openapi::TaskAccessErrors,
        (status = 412, description = "`If-Match` named no ETag the task has now, or `If-None-Match` named its current one (or `*`): nothing changed", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(412, "the task has changed since the ETag in If-Match; GET it again"))),
        common::openapi::BodyErrors,
        (status = 422, description = "Malformed body or `completed` not a boolean", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(422, "Failed to deserialize the JSON body into the target type: missing field `completed` at line 1 column 2"))),
    )
)]
pub async fn complete(
    State(state): State<AppState>,
    user: AuthUser,
    headers: ClientHeaders,
    Path(id): Path<i64>,
    Json(body): Json<Completion>,
) -> Result<Response> {
    let changes = Changes {
        title: None,
        description: None,
        completed: Some(body.completed),
    };
    let mut conn = state.db.acquire().await?;
    let if_match = write_condition(&mut conn, &headers, user, id).await?;
    let updated = store::update(&mut conn, user.user_id, id, changes, if_match.versions()).await;
    let updated = match state.db.observe(updated)? {
        Some(updated) => updated,
        None => return Err(unmet(&mut conn, user, id, &if_match).await),
    };
    Ok(answer_update(&state, user, updated))
}

/// Deletes a task.
#[utoipa::path(
    delete,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, description = "Task id"), ("if-match" = Option<String>, Header, description = "ETags the client's copy may have (`*`: any): otherwise 412 and nothing changes"), ("if-none-match" = Option<String>, Header, description = "ETags the task must not have (`*`: the task must not exist): a match is 412 and nothing changes")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        crate::openapi::TaskAccessErrors,
        (status = 412, description = "`If-Match` named no ETag the task has now, or `If-None-Match` named its current one (or `*`): nothing changed", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(412, "the task has changed since the ETag in If-Match; GET it again"))),
        (status = 422, description = "The id is not an integer", body = common::problem::ProblemBody, content_type = "application/problem+json", example = json!(common::openapi::problem_example(422, "Invalid URL: Cannot parse `abc` to a `i64`"))),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    headers: ClientHeaders,
    Path(id): Path<i64>,
) -> Result<axum::Json<Deleted>> {
    let mut conn = state.db.acquire().await?;
    let if_match = write_condition(&mut conn, &headers, user, id).await?;
    let deleted = store::delete(&mut conn, user.user_id, id, if_match.versions()).await;
    if !state.db.observe(deleted)? {
        return Err(unmet(&mut conn, user, id, &if_match).await);
    }
    state.metrics.deleted.inc();
    state.pages.forget(user.user_id);
    Ok(axum::Json(Deleted {
        message: "Task deleted successfully",
    }))
}
