//! Reads of single tasks, coalesced under load. While a statement of reads is running, the reads
//! that arrive meanwhile wait for it, then go to PostgreSQL together as the next statement; a
//! second one (up to `READ_COALESCING_IN_FLIGHT`) starts beside it only once it has stalled. A single read's cost is not the row: it is the round trip (the system calls on
//! both sides) and PostgreSQL's work per statement, so under load one statement for many reads
//! is cheaper for both processes. Idle, a read goes alone at once and waits for nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::db::Db;
use prometheus::{Histogram, HistogramOpts, Registry};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use super::{Task, store};
use crate::error::{Error, Result};

/// The most reads one statement carries.
const MAX_BATCH: usize = 64;

/// How single-task reads reach the database.
#[derive(Clone)]
pub enum TaskReader {
    /// One statement per read, on a pooled connection of its own.
    Direct(Db),
    /// Coalesced: lookups queue for the batcher task.
    Coalesced(mpsc::Sender<Lookup>),
}

type Answer = std::result::Result<Option<Task>, Arc<sqlx::Error>>;

pub struct Lookup {
    user: Uuid,
    id: i64,
    reply: oneshot::Sender<Answer>,
    /// The span the batch's statement runs under when this is the batch's first read: the
    /// read's `db.tasks.get` span, or the request's when database spans are not made, so the
    /// statement's log lines still name a request.
    span: tracing::Span,
}

impl TaskReader {
    /// `in_flight` = 0 reads directly; otherwise at most that many statements run at once
    /// (each on a pooled connection) and the reads that arrive meanwhile are batched.
    pub fn start(db: Db, in_flight: u32, registry: &Registry) -> prometheus::Result<Self> {
        if in_flight == 0 {
            return Ok(Self::Direct(db));
        }
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "task_read_batch_size",
                "Single-task reads answered by one coalesced statement.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )?;
        registry.register(Box::new(batch_size.clone()))?;
        let (lookups, queue) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(batch_lookups(db, queue, in_flight as usize, batch_size));
        Ok(Self::Coalesced(lookups))
    }

    /// The task `id` if it is `user`'s.
    pub async fn get(&self, user: Uuid, id: i64) -> Result<Option<Task>> {
        let lookups = match self {
            // `store::get` makes the read's `db.tasks.get` span itself.
            Self::Direct(db) => {
                return Ok(db
                    .read(|mut conn| async move { store::get(&mut conn, user, id).await })
                    .await?);
            }
            Self::Coalesced(lookups) => lookups,
        };
        // The read's span covers its wait for the batch; the batch's statement runs under the
        // span of its first read.
        let span = common::db_span!("db.tasks.get", "SELECT");
        // The batcher only stops when every sender is gone, so a closed channel means the
        // runtime is shutting down: the database is as good as closed to this request.
        let closed = || Error::Database(sqlx::Error::PoolClosed);
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            user,
            id,
            reply,
            span: if span.is_disabled() {
                tracing::Span::current()
            } else {
                span.clone()
            },
        };
        async {
            lookups.send(lookup).await.map_err(|_| closed())?;
            answer
                .await
                .map_err(|_| closed())?
                .map_err(Error::SharedDatabase)
        }
        .instrument(span)
        .await
    }
}

/// How long a running statement has before the reads queued behind it take another slot. A
/// statement normally answers well within it, so reads that arrive meanwhile wait for it and go
/// together in the next one (10 reads per statement instead of 5, and 1.26× the reads side by
/// side against starting a second statement at once: run 12 in `deploy/bench/RESULTS.md`); a stalled one (a lock wait, a slow disk, a
/// connection being replaced) holds up the reads behind it for no longer than this.
const STALL: Duration = Duration::from_millis(2);

/// The batcher: takes a free slot, then every lookup queued by then (up to `MAX_BATCH`), and
/// answers them with one statement in a task of its own. While another statement runs, the
/// batch grows until that one ends or `STALL` passes; while all slots are busy, lookups queue.
async fn batch_lookups(
    db: Db,
    mut queue: mpsc::Receiver<Lookup>,
    in_flight: usize,
    batch_size: Histogram,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    let finished = Arc::new(Notify::new());
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        // Registered before looking, so a statement that ends in between still wakes it.
        let another_ends = finished.notified();
        tokio::pin!(another_ends);
        another_ends.as_mut().enable();
        if slots.available_permits() + 1 < in_flight {
            let _ = tokio::time::timeout(STALL, another_ends).await;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(lookup) => batch.push(lookup),
                Err(_) => break,
            }
        }
        batch_size.observe(batch.len() as f64);
        let db = db.clone();
        let finished = Arc::clone(&finished);
        tokio::spawn(async move {
            answer(&db, batch).await;
            drop(slot);
            finished.notify_waiters();
        });
    }
}

async fn answer(db: &Db, batch: Vec<Lookup>) {
    // A request that gave up (client gone, timeout) no longer needs its row.
    let batch: Vec<Lookup> = batch
        .into_iter()
        .filter(|lookup| !lookup.reply.is_closed())
        .collect();
    if batch.is_empty() {
        return;
    }
    let ids: Vec<i64> = batch.iter().map(|lookup| lookup.id).collect();
    let users: Vec<Uuid> = batch.iter().map(|lookup| lookup.user).collect();
    let found = db
        .read(|mut conn| {
            let (ids, users) = (&ids, &users);
            async move { store::get_many(&mut conn, ids, users).await }
        })
        .instrument(batch[0].span.clone())
        .await;
    match found {
        Ok(tasks) => {
            let by_key: HashMap<(i64, Uuid), Task> = tasks
                .into_iter()
                .map(|task| ((task.id, task.user_id), task))
                .collect();
            for lookup in batch {
                // Cloned: one batch may hold the same task twice.
                let task = by_key.get(&(lookup.id, lookup.user)).cloned();
                let _ = lookup.reply.send(Ok(task));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for lookup in batch {
                let _ = lookup.reply.send(Err(Arc::clone(&error)));
            }
        }
    }
}
