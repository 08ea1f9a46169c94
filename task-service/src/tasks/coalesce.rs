//! Requests coalesced into shared statements under load, for single reads (`reader`) and
//! creates (`creator`). While a statement is running, the requests that arrive meanwhile wait for
//! it, then go to PostgreSQL together as the next statement; a second one (up to the configured
//! number in flight) starts beside it only once it has stalled. Idle, a request goes alone at
//! once and waits for nothing.
//!
//! What a statement costs is mostly not its rows: it is the round trip (the system calls on both
//! sides), PostgreSQL's work per statement and, for a write, the commit's WAL flush. So under load
//! one statement for many requests is cheaper for both processes, and a write's rate stops being
//! bounded by how many commits the pool's connections can wait on at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntGauge, Opts, Registry};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::error::{Error, Result};

/// The most requests one statement carries.
pub const MAX_BATCH: usize = 64;

/// How long a running statement has before the requests queued behind it take another slot. A
/// read's statement normally answers well within it, so reads that arrive meanwhile wait for it
/// and go together in the next one (10 reads per statement instead of 5, and 1.26× the reads side by
/// side against starting a second statement at once: run 12 in `deploy/bench/RESULTS.md`); a
/// stalled one (a lock wait, a slow disk, a connection being replaced) holds up the requests
/// behind it for no longer than this. A create's statement waits for its commit's WAL flush
/// (5–6 ms on the benchmark machine's disk), so create batches overlap after this long, up to
/// `CREATE_COALESCING_IN_FLIGHT` at once: while one batch waits for its flush, the next one
/// gathers the creates that arrive meanwhile.
const STALL: Duration = Duration::from_millis(2);

/// One request waiting for its batch's statement.
pub struct Pending<Q, A> {
    pub query: Q,
    reply: oneshot::Sender<A>,
    /// The span the batch's statement runs under when this is the batch's first request.
    span: tracing::Span,
}

impl<Q, A> Pending<Q, A> {
    /// A request that gave up (client gone, timeout) no longer needs its statement.
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    pub fn answer(self, answer: A) {
        let _ = self.reply.send(answer);
    }

    /// Answers with what `answer` makes of the request's own query (given back to it).
    pub fn answer_with(self, answer: impl FnOnce(Q) -> A) {
        let _ = self.reply.send(answer(self.query));
    }
}

/// Runs `statement` on a batch's requests under the span of the batch's first request.
pub async fn in_first_span<Q, A, T>(
    batch: &[Pending<Q, A>],
    statement: impl Future<Output = T>,
) -> T {
    match batch.first() {
        Some(first) => statement.instrument(first.span.clone()).await,
        None => statement.await,
    }
}

/// What a batch's statement answers each request: its own result, or the batch's one error.
pub type DbAnswer<T> = std::result::Result<T, Arc<sqlx::Error>>;

/// Answers every request of a batch with the statement's one error.
pub fn fail_all<Q, T>(batch: Vec<Pending<Q, DbAnswer<T>>>, error: sqlx::Error) {
    let error = Arc::new(error);
    for pending in batch {
        pending.answer(Err(Arc::clone(&error)));
    }
}

/// The queue's bound: a request that finds it full waits for room (`submit`).
const QUEUE: usize = 4 * MAX_BATCH;

/// The queue in front of the batcher task. Cheap to clone.
pub struct Coalescer<Q, A> {
    queue: mpsc::Sender<Pending<Q, A>>,
}

impl<Q, A> Clone for Coalescer<Q, A> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<Q: Send + 'static, A: Send + 'static> Coalescer<Q, A> {
    /// Starts the batcher: at most `in_flight` (≥ 1) statements run at once, each made by
    /// `statement` from a batch and each answering every request of its batch. `metric` (a
    /// histogram of requests per statement) and `queued` (a gauge of the requests waiting for a
    /// statement) are registered in `registry`.
    pub fn start<F, Fut>(
        in_flight: usize,
        metric: HistogramOpts,
        queued: Opts,
        registry: &Registry,
        statement: F,
    ) -> prometheus::Result<Self>
    where
        F: Fn(Vec<Pending<Q, A>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let batch_size =
            Histogram::with_opts(metric.buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]))?;
        registry.register(Box::new(batch_size.clone()))?;
        let (queue, requests) = mpsc::channel(QUEUE);
        registry.register(Box::new(QueueDepth {
            queue: queue.downgrade(),
            gauge: IntGauge::with_opts(queued)?,
        }))?;
        tokio::spawn(batch(requests, in_flight.max(1), batch_size, statement));
        Ok(Self { queue })
    }

    /// Queues `query` and waits for its answer; `None` when the batcher is gone. `span` (a
    /// database span, possibly disabled) covers the wait; the batch's statement runs under it,
    /// or under the current span when no database span is made, so that the statement's log
    /// lines still name a request.
    pub async fn submit(&self, query: Q, span: tracing::Span) -> Option<A> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            query,
            reply,
            span: if span.is_disabled() {
                tracing::Span::current()
            } else {
                span.clone()
            },
        };
        async {
            self.queue.send(pending).await.ok()?;
            answer.await.ok()
        }
        .instrument(span)
        .await
    }
}

/// The requests waiting in a coalescer's queue (up to `QUEUE`; more wait for room), read from
/// the queue itself when scraped, so that a request pays nothing for the gauge. Weak: the
/// batcher still stops when the last real sender goes.
struct QueueDepth<T> {
    queue: mpsc::WeakSender<T>,
    gauge: IntGauge,
}

impl<T: Send + 'static> Collector for QueueDepth<T> {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let waiting = self
            .queue
            .upgrade()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity());
        self.gauge.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.gauge.collect()
    }
}

impl<Q: Send + 'static, T: Send + 'static> Coalescer<Q, DbAnswer<T>> {
    /// `submit` as a handler needs it: the request's result, or its batch's error.
    pub async fn ask(&self, query: Q, span: tracing::Span) -> Result<T> {
        // The batcher only stops when every sender is gone, so no answer means the runtime is
        // shutting down: the database is as good as closed to this request.
        self.submit(query, span)
            .await
            .ok_or(Error::Database(sqlx::Error::PoolClosed))?
            .map_err(Error::SharedDatabase)
    }
}

/// The batcher: takes a free slot, then every request queued by then (up to `MAX_BATCH`), and
/// answers them with one statement in a task of its own (never dropped halfway, so a write's
/// statement always runs to its end). While another statement runs, the batch grows until that
/// one ends or `STALL` passes; while all slots are busy, requests queue. It stops when every
/// sender is gone.
async fn batch<Q, A, F, Fut>(
    mut requests: mpsc::Receiver<Pending<Q, A>>,
    in_flight: usize,
    batch_size: Histogram,
    statement: F,
) where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Vec<Pending<Q, A>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    let finished = Arc::new(Notify::new());
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = requests.recv().await else {
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
            match requests.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        batch.retain(|pending| !pending.abandoned());
        if batch.is_empty() {
            continue;
        }
        batch_size.observe(batch.len() as f64);
        let work = statement(batch);
        let finished = Arc::clone(&finished);
        tokio::spawn(async move {
            work.await;
            drop(slot);
            finished.notify_waiters();
        });
    }
}
