//! Password hashing off the async workers: bcrypt runs on dedicated threads, at most
//! `BCRYPT_MAX_CONCURRENCY` at once, with a bounded, time-limited queue in front. A saturated
//! pool answers "busy" (503) at once instead of queueing without bound, so a login storm
//! cannot starve the rest of the service.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::HashingArgs;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("hashing pool saturated")]
    Busy,
    #[error("bcrypt failed: {0}")]
    Bcrypt(String),
}

type Job = Box<dyn FnOnce() + Send>;

pub struct PasswordHasher {
    cost: u32,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    queue_timeout: Duration,
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Verified against when the email is unknown, so that path costs what a real one does.
    dummy_hash: String,
    metrics: HashMetrics,
}

#[derive(Clone)]
struct HashMetrics {
    queue_depth: IntGauge,
    queue_wait: Histogram,
    rejected: IntCounter,
}

impl PasswordHasher {
    pub fn start(args: &HashingArgs, registry: &Registry) -> anyhow::Result<Self> {
        let concurrency = match args.bcrypt_max_concurrency {
            Some(n) => n as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let max_waiting = args
            .bcrypt_max_queue
            .map_or(concurrency * 4, |n| n as usize);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..concurrency {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("bcrypt-{index}"))
                .spawn(move || worker(&receiver))?;
        }
        let dummy_hash = bcrypt::hash("dummy password for unknown emails", args.bcrypt_cost)?;
        Ok(Self {
            cost: args.bcrypt_cost,
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            queue_timeout: Duration::from_millis(args.bcrypt_queue_timeout_ms),
            jobs: Mutex::new(sender),
            dummy_hash,
            metrics: HashMetrics::register(registry)?,
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Waits for a hashing slot (or answers `Busy` at once when the queue is full). Taking
    /// the slot before any other work lets a saturated pool refuse a login before it costs a
    /// database round trip.
    pub async fn reserve(&self) -> Result<Slot<'_>, HashError> {
        Ok(Slot {
            hasher: self,
            permit: self.wait_for_slot().await?,
        })
    }

    /// Hashes `password` at the configured cost.
    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        self.reserve().await?.hash(password).await
    }

    async fn wait_for_slot(&self) -> Result<OwnedSemaphorePermit, HashError> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            self.metrics.queue_wait.observe(0.0);
            return Ok(permit);
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        if queued >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.metrics.rejected.inc();
            return Err(HashError::Busy);
        }
        self.metrics.queue_depth.inc();
        let started = Instant::now();
        let acquired =
            tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.metrics.queue_depth.dec();
        self.metrics
            .queue_wait
            .observe(started.elapsed().as_secs_f64());
        match acquired {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.metrics.rejected.inc();
                Err(HashError::Busy)
            }
        }
    }
}

/// A reserved hashing slot: the next hash or verification runs in it.
pub struct Slot<'a> {
    hasher: &'a PasswordHasher,
    permit: OwnedSemaphorePermit,
}

impl Slot<'_> {
    /// Hashes `password` at the configured cost.
    pub async fn hash(self, password: SecretString) -> Result<String, HashError> {
        let cost = self.hasher.cost;
        self.run(move || {
            bcrypt::hash(password.expose_secret(), cost)
                .map_err(|e| HashError::Bcrypt(e.to_string()))
        })
        .await?
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is no account.
    pub async fn verify(
        self,
        password: SecretString,
        hash: Option<String>,
    ) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.hasher.dummy_hash.clone());
        let matches = self
            .run(move || bcrypt::verify(password.expose_secret(), &hash).unwrap_or(false))
            .await?;
        Ok(known && matches)
    }

    /// Runs `work` on a hashing thread. The slot's permit travels with the job, so a client
    /// that hangs up does not free a slot while its hash is still running.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = self.permit;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit: OwnedSemaphorePermit = permit;
            let _ = done.send(work());
        });
        self.hasher
            .jobs
            .lock()
            .map_err(|_| HashError::Busy)?
            .send(job)
            .map_err(|_| HashError::Busy)?;
        result.await.map_err(|_| HashError::Busy)
    }
}

/// A hashing thread: runs jobs until the pool is dropped.
fn worker(jobs: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Hashing yields the CPU to request handling, but is not starved by it: SCHED_BATCH tells the
/// kernel these threads are throughput work that should not preempt interactive threads, and
/// nice 9 gives them about an eighth of a busy core's share. (At nice 19 a flood of refused
/// logins left no CPU for hashing at all: 0 logins/s in the benchmark.)
fn lower_priority() {
    // thread-priority maps 0..=99 onto nice 19..=-20; 23 is nice 9.
    const NICE_9: u8 = 23;
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    if let Err(error) = set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Crossplatform(NICE_9.try_into().unwrap_or_default()),
        policy,
    ) {
        tracing::debug!(?error, "could not lower the hashing threads' priority");
    }
}

impl HashMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let queue_depth = IntGauge::new(
            "bcrypt_queue_depth",
            "Password hashes waiting for a hashing slot.",
        )?;
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new(
                "bcrypt_queue_wait_seconds",
                "Time a password hash waited for a hashing slot.",
            )
            .buckets(vec![0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0]),
        )?;
        let rejected = IntCounter::new(
            "bcrypt_rejected_total",
            "Password hashes refused because the hashing pool was saturated.",
        )?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(queue_wait.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        Ok(Self {
            queue_depth,
            queue_wait,
            rejected,
        })
    }
}
