//! Reads of single tasks, coalesced under load (`coalesce`; up to `READ_COALESCING_IN_FLIGHT`
//! statements at once): one `get_many.sql` answers every read queued while the previous
//! statement ran. A read has no effect, so a statement whose connection was lost is sent again
//! (`Db::read`).

use std::collections::HashMap;

use common::db::Db;
use prometheus::{HistogramOpts, Opts, Registry};
use uuid::Uuid;

use super::coalesce::{self, Coalescer, DbAnswer, Pending};
use super::{Task, store};
use crate::error::Result;

/// How single-task reads reach the database.
#[derive(Clone)]
pub enum TaskReader {
    /// One statement per read, on a pooled connection of its own.
    Direct(Db),
    /// Coalesced: reads queue for the batcher (`coalesce`).
    Coalesced(Coalescer<Key, Answer>),
}

/// The task asked for: its id and the user who asks.
type Key = (i64, Uuid);
type Answer = DbAnswer<Option<Task>>;

impl TaskReader {
    /// `in_flight` = 0 reads directly; otherwise at most that many statements run at once
    /// (each on a pooled connection) and the reads that arrive meanwhile are batched.
    pub fn start(db: Db, in_flight: u32, registry: &Registry) -> prometheus::Result<Self> {
        if in_flight == 0 {
            return Ok(Self::Direct(db));
        }
        let metric = HistogramOpts::new(
            "task_read_batch_size",
            "Single-task reads answered by one coalesced statement.",
        );
        let queued = Opts::new(
            "task_read_queue_depth",
            "Single-task reads waiting for the next coalesced statement.",
        );
        let coalescer =
            Coalescer::start(in_flight as usize, metric, queued, registry, move |batch| {
                answer(db.clone(), batch)
            })?;
        Ok(Self::Coalesced(coalescer))
    }

    /// The task `id` if it is `user`'s.
    pub async fn get(&self, user: Uuid, id: i64) -> Result<Option<Task>> {
        match self {
            // `store::get` makes the read's `db.tasks.get` span itself.
            Self::Direct(db) => Ok(db
                .read(|mut conn| async move { store::get(&mut conn, user, id).await })
                .await?),
            Self::Coalesced(reads) => {
                let span = common::db_span!("db.tasks.get", "SELECT");
                reads.ask((id, user), span).await
            }
        }
    }
}

async fn answer(db: Db, batch: Vec<Pending<Key, Answer>>) {
    let ids: Vec<i64> = batch.iter().map(|read| read.query.0).collect();
    let users: Vec<Uuid> = batch.iter().map(|read| read.query.1).collect();
    let found = coalesce::in_first_span(
        &batch,
        db.read(|mut conn| {
            let (ids, users) = (&ids, &users);
            async move { store::get_many(&mut conn, ids, users).await }
        }),
    )
    .await;
    match found {
        Ok(tasks) => {
            let by_key: HashMap<Key, Task> = tasks
                .into_iter()
                .map(|task| ((task.id, task.user_id), task))
                .collect();
            for read in batch {
                // Cloned: one batch may hold the same task twice.
                let task = by_key.get(&read.query).cloned();
                read.answer(Ok(task));
            }
        }
        Err(error) => coalesce::fail_all(batch, error),
    }
}
