//! Creates without an `Idempotency-Key`, coalesced under load (`coalesce`; up to
//! `CREATE_COALESCING_IN_FLIGHT` statements at once): one `create_many_within_allowance.sql`
//! inserts every create queued while the previous statement ran, and commits them together.
//!
//! A create's rate is bounded by its commit: PostgreSQL answers a commit once its WAL is flushed
//! (a few milliseconds on a disk), and the commits that wait meanwhile share the next flush. One
//! statement per create lets at most as many creates share a flush as the pool has connections;
//! a batch lets every create in flight share it. The batch's statement also pays the cap's
//! statement trigger and the round trip once for all its rows.
//!
//! A write is never sent twice: a batch whose connection was lost answers every create in it
//! with the error (a 503; the client decides), as a single create does (`Db::observe`).

use common::db::{Db, run_to_completion};
use prometheus::{HistogramOpts, Opts, Registry};
use uuid::Uuid;

use super::Task;
use super::coalesce::{self, Coalescer, DbAnswer, Pending};
use super::fields::{TaskDescription, TaskTitle};
use super::store::{self, NewTaskRow};
use crate::error::Result;

/// How creates reach the database.
#[derive(Clone)]
pub struct TaskCreator {
    db: Db,
    /// `TASKS_MAX_PER_USER`.
    max_per_user: i32,
    /// `None`: one statement per create, on a pooled connection of its own.
    batches: Option<Coalescer<NewTaskRow, Answer>>,
}

type Answer = DbAnswer<Inserted>;

/// What the batch's statement did with one create.
enum Inserted {
    Created(Task),
    /// Not inserted: its count row had no allowance left. The create is given back.
    NoAllowance(NewTaskRow),
}

impl TaskCreator {
    /// `in_flight` = 0 creates one statement each; otherwise at most that many statements run
    /// at once (each on a pooled connection) and the creates that arrive meanwhile are batched.
    pub fn start(
        db: Db,
        max_per_user: i32,
        in_flight: u32,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let batches = match in_flight {
            0 => None,
            _ => {
                let metric = HistogramOpts::new(
                    "task_create_batch_size",
                    "Creates inserted and committed by one coalesced statement.",
                );
                let queued = Opts::new(
                    "task_create_queue_depth",
                    "Creates waiting for the next coalesced statement.",
                );
                let db = db.clone();
                Some(Coalescer::start(
                    in_flight as usize,
                    metric,
                    queued,
                    registry,
                    move |batch| insert(db.clone(), max_per_user, batch),
                )?)
            }
        };
        Ok(Self {
            db,
            max_per_user,
            batches,
        })
    }

    /// Creates a task for `user`; `None` when they already hold `TASKS_MAX_PER_USER` tasks.
    pub async fn create(
        &self,
        user: Uuid,
        title: TaskTitle,
        description: Option<TaskDescription>,
    ) -> Result<Option<Task>> {
        let Some(batches) = &self.batches else {
            return self.create_alone(user, &title, description.as_ref()).await;
        };
        let row = NewTaskRow {
            user,
            title,
            description,
        };
        let span = common::db_span!("db.tasks.create", "INSERT");
        let row = match batches.ask(row, span).await? {
            Inserted::Created(task) => return Ok(Some(task)),
            Inserted::NoAllowance(row) => row,
        };
        // No allowance left where it landed. Another create may have counted and granted new
        // allowances since the batch ran (a burst of one user's creates fills a batch against
        // the same allowances), so this tries within them again before counting under the
        // lock: counting serializes the user's creates, and a burst of them all counting one
        // by one would outlast the pool's acquire timeout.
        self.create_alone(row.user, &row.title, row.description.as_ref())
            .await
    }

    /// One create in a statement of its own (`store::create`), on a pooled connection. Run to
    /// completion: when it counts under a lock it is a transaction, which a request dropped
    /// between BEGIN and its answer would leave open on the pooled connection.
    async fn create_alone(
        &self,
        user: Uuid,
        title: &TaskTitle,
        description: Option<&TaskDescription>,
    ) -> Result<Option<Task>> {
        let (db, max) = (self.db.clone(), self.max_per_user);
        let (title, description) = (title.clone(), description.cloned());
        run_to_completion(async move {
            let mut conn = db.acquire().await?;
            let created = store::create(&mut conn, user, &title, description.as_ref(), max).await;
            Ok(db.observe(created)?)
        })
        .await
    }
}

async fn insert(db: Db, max_per_user: i32, mut batch: Vec<Pending<NewTaskRow, Answer>>) {
    let conn = coalesce::in_first_span(&batch, db.acquire()).await;
    // A create whose request gave up while the pool was busy is left out: its client was told
    // nothing was done, and a retry must not find its task already there.
    batch.retain(|create| !create.abandoned());
    if batch.is_empty() {
        return;
    }
    let rows: Vec<&NewTaskRow> = batch.iter().map(|create| &create.query).collect();
    let inserted = coalesce::in_first_span(&batch, async {
        let mut conn = conn?;
        db.observe(store::create_many_within_allowance(&mut conn, &rows, max_per_user).await)
    })
    .await;
    match inserted {
        Ok(created) => {
            let mut answers: Vec<Option<Task>> = vec![None; batch.len()];
            for (index, task) in created {
                if let Some(answer) = answers.get_mut(index) {
                    *answer = Some(task);
                }
            }
            for (create, task) in batch.into_iter().zip(answers) {
                create.answer_with(|row| {
                    Ok(match task {
                        Some(task) => Inserted::Created(task),
                        None => Inserted::NoAllowance(row),
                    })
                });
            }
        }
        Err(error) => coalesce::fail_all(batch, error),
    }
}
