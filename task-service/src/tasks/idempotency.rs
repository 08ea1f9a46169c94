//! `Idempotency-Key` on `POST /api/v1/tasks`: a client that retries a create (after a timeout
//! or a 503) gets the first answer back, the same task, instead of a second task.
//!
//! The key is the user's own (another user's identical key is another key) and lives
//! IDEMPOTENCY_KEY_TTL_SECONDS. The task and the key's record are written in one transaction,
//! and the record's unique index makes a concurrent request with the same key wait for the
//! first to commit; it then finds the record, rolls back its own task, and answers as the first
//! did. So concurrent requests with one key create exactly one task and all get its answer.

use std::time::Duration;

use axum::http::HeaderValue;
use common::db::{Db, run_to_completion};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::fields::{TaskDescription, TaskTitle};
use super::store::{self, StoredAnswer};
use super::{Task, conditional};
use crate::error::{Error, Result};

pub const HEADER: &str = "idempotency-key";
pub const MAX_KEY_LENGTH: usize = 255;

/// A valid `Idempotency-Key`: 1..=255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The request's key, if it sent one; a 422 reason when it is not a valid key. `values`:
    /// every `Idempotency-Key` header of the request.
    pub fn from_values(values: &[HeaderValue]) -> Result<Option<Self>, String> {
        let mut values = values.iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err("send one Idempotency-Key header, not several".into());
        }
        let bytes = value.as_bytes();
        if bytes.is_empty()
            || bytes.len() > MAX_KEY_LENGTH
            || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Err(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
            ));
        }
        let key = std::str::from_utf8(bytes).expect("visible ASCII is UTF-8");
        Ok(Some(Self(key.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Identifies a create's request: its fields as sent (before trimming), so the same key with
/// another body is told apart however the JSON was spaced or ordered.
pub fn fingerprint(title: &str, description: Option<&str>) -> Vec<u8> {
    let canonical = serde_json::to_vec(&(title, description)).expect("strings serialize");
    Sha256::digest(canonical).to_vec()
}

/// What a create with a key answers.
pub enum Created {
    /// This request created the task.
    New(Task),
    /// An earlier request with this key did; its answer, to send again.
    Replayed(StoredAnswer),
}

/// Creates the task and records the answer under `key`, or returns the recorded answer of an
/// earlier request with the same key and body. `Error::IdempotencyKeyReused` when that earlier
/// request had another body; `Error::TooManyTasks` at the cap when no request with this key
/// succeeded (nothing is recorded: a retry after a delete may succeed).
#[allow(clippy::too_many_arguments)]
pub async fn create(
    db: &Db,
    user: Uuid,
    key: &IdempotencyKey,
    fingerprint: Vec<u8>,
    title: &TaskTitle,
    description: Option<&TaskDescription>,
    max_tasks: i32,
    ttl_seconds: u64,
) -> Result<Created> {
    // A retry after the first answer, the usual case, is answered from the record alone: no
    // task is inserted and rolled back (no identity value burnt, no cap row locked), and a user
    // whose first create reached the cap still gets that first answer, not a 409.
    if let Some(first) = recorded(db, user, key).await? {
        return replay(first, &fingerprint);
    }
    let attempt = run_to_completion(insert_and_claim(
        db.clone(),
        user,
        key.clone(),
        fingerprint.clone(),
        title.clone(),
        description.cloned(),
        max_tasks,
        ttl_seconds,
    ))
    .await?;
    match attempt {
        Attempt::Created(task) => Ok(Created::New(task)),
        // A concurrent request with this key may have committed the task that filled the cap.
        Attempt::AtCap => match recorded(db, user, key).await? {
            Some(first) => replay(first, &fingerprint),
            None => Err(Error::TooManyTasks { max: max_tasks }),
        },
        // The key was claimed first by a concurrent request: this one's task was rolled back.
        Attempt::KeyTaken => {
            let first = recorded(db, user, key)
                .await?
                // Expired between the two statements: as good as never used, but this
                // request's task is rolled back already; the client's retry claims the key.
                .ok_or(Error::RetryNow(
                    "the Idempotency-Key expired while this request ran; retry",
                ))?;
            replay(first, &fingerprint)
        }
    }
}

/// What the transaction of a keyed create did.
enum Attempt {
    /// Inserted the task and recorded its answer under the key: committed.
    Created(Task),
    /// The user is at the cap: nothing inserted.
    AtCap,
    /// A concurrent request claimed the key first: rolled back.
    KeyTaken,
}

/// The task and its key's record in one transaction. Owns its arguments: it runs to completion
/// in a task of its own (`run_to_completion`), since a request dropped between BEGIN or COMMIT
/// and its answer would leave the transaction open on a pooled connection, for the next request
/// to write into.
#[allow(clippy::too_many_arguments)]
async fn insert_and_claim(
    db: Db,
    user: Uuid,
    key: IdempotencyKey,
    fingerprint: Vec<u8>,
    title: TaskTitle,
    description: Option<TaskDescription>,
    max_tasks: i32,
    ttl_seconds: u64,
) -> Result<Attempt> {
    let mut tx = db.begin().await?;
    let Some(task) = store::create(&mut tx, user, &title, description.as_ref(), max_tasks).await?
    else {
        tx.rollback().await?;
        return Ok(Attempt::AtCap);
    };
    let answer = StoredAnswer {
        fingerprint,
        status: 201,
        etag: conditional::etag(task.version)
            .to_str()
            .expect("ASCII")
            .to_owned(),
        body: super::body::task(&task)?,
    };
    if store::claim_key(&mut tx, user, key.as_str(), &answer, ttl_seconds).await? {
        tx.commit().await?;
        return Ok(Attempt::Created(task));
    }
    tx.rollback().await?;
    Ok(Attempt::KeyTaken)
}

/// The live record of `key`, if a request with it has committed.
async fn recorded(db: &Db, user: Uuid, key: &IdempotencyKey) -> Result<Option<StoredAnswer>> {
    let mut conn = db.acquire().await?;
    Ok(store::stored_answer(&mut conn, user, key.as_str()).await?)
}

/// The first request's answer again, when this request has the same body.
fn replay(first: StoredAnswer, fingerprint: &[u8]) -> Result<Created> {
    if first.fingerprint != fingerprint {
        return Err(Error::IdempotencyKeyReused);
    }
    Ok(Created::Replayed(first))
}

/// How often expired keys are deleted, and how many per statement.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(600);
const CLEANUP_BATCH: i64 = 10_000;

/// Deletes expired keys every ten minutes, on one replica at a time, in batches through the
/// `expires_at` index: never on the request path, never a table scan.
pub fn spawn_cleanup(db: Db, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(CLEANUP_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match cleanup_once(&db).await {
                Ok(Some(0)) => {}
                Ok(Some(deleted)) => tracing::info!(deleted, "expired idempotency keys deleted"),
                Ok(None) => tracing::debug!("idempotency cleanup: another replica holds the lock"),
                Err(error) => tracing::warn!(%error, "idempotency cleanup failed"),
            }
        }
    });
}

pub async fn cleanup_once(db: &Db) -> sqlx::Result<Option<u64>> {
    let mut total = 0;
    loop {
        let mut tx = db.begin().await?;
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtext('tasks-idempotency-cleanup'))",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            return Ok(None);
        }
        let deleted = store::delete_expired_keys(&mut tx, CLEANUP_BATCH).await?;
        tx.commit().await?;
        total += deleted;
        if deleted < CLEANUP_BATCH as u64 {
            return Ok(Some(total));
        }
    }
}
