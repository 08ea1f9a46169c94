//! Password hashing off the async workers: bcrypt runs on dedicated threads, at most
//! `BCRYPT_MAX_CONCURRENCY` at once, with a bounded, time-limited queue in front. A saturated
//! pool answers "busy" (503) instead of queueing without bound, so a login storm cannot starve
//! the rest of the service.
//!
//! A login that finds the queue full is held for `BCRYPT_REFUSAL_DELAY_MS` before its 503. A
//! closed-loop client that ignores `Retry-After` would otherwise turn instant refusals into a
//! busy loop: the cheaper the refusal, the more of them per second, until answering refusals
//! takes the CPU the queued hashes need (measured: 0.3 of the bcrypt bound under such a flood).
//! A held refusal costs a timer, not a core.

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

/// How the hashing threads are scheduled against request handling (`BCRYPT_PRIORITY`).
/// Either class ranks the hashing threads only against threads of the same scheduling group
/// (this process, its container); between groups the kernel shares the CPU by group weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingPriority {
    /// SCHED_IDLE: run only on CPU nobody else in the group wants. Under CPU saturation from
    /// other work, logins wait (and time out) first.
    Idle,
    /// SCHED_BATCH at this nice value (0..=19): a share of a busy CPU that shrinks as the
    /// nice value grows. The default, 19.
    Batch { nice: u8 },
}

impl std::str::FromStr for HashingPriority {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value == "idle" {
            return Ok(Self::Idle);
        }
        match value.parse::<u8>() {
            Ok(nice) if nice <= 19 => Ok(Self::Batch { nice }),
            _ => Err(format!(
                "expected `idle` or a nice value 0..=19, got `{value}`"
            )),
        }
    }
}

pub struct PasswordHasher {
    cost: u32,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    queue_timeout: Duration,
    refusal_delay: Duration,
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
            let priority = args.bcrypt_priority;
            std::thread::Builder::new()
                .name(format!("bcrypt-{index}"))
                .spawn(move || worker(&receiver, priority))?;
        }
        let dummy_hash = bcrypt::hash("dummy password for unknown emails", args.bcrypt_cost)?;
        Ok(Self {
            cost: args.bcrypt_cost,
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            queue_timeout: Duration::from_millis(args.bcrypt_queue_timeout_ms),
            refusal_delay: Duration::from_millis(args.bcrypt_refusal_delay_ms),
            jobs: Mutex::new(sender),
            dummy_hash,
            metrics: HashMetrics::register(registry)?,
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Waits for a hashing slot (or answers `Busy`, after the refusal delay, when the queue is
    /// full). Taking
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
            tokio::time::sleep(self.refusal_delay).await;
            return Err(HashError::Busy);
        }
        let place = QueuePlace::taken(self);
        let acquired =
            tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned()).await;
        drop(place);
        match acquired {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.metrics.rejected.inc();
                Err(HashError::Busy)
            }
        }
    }
}

/// A request's place in the hashing queue, given back when it is dropped: when the request gets
/// a slot or gives up, and also when it is cancelled while it waits (the client hung up, or the
/// request timed out). Given back by hand after the wait, a cancelled request would keep its
/// place for good, and a few of them would fill the queue until a restart.
struct QueuePlace<'a> {
    hasher: &'a PasswordHasher,
    since: Instant,
}

impl<'a> QueuePlace<'a> {
    /// Counts a place the caller has already taken in `waiting`.
    fn taken(hasher: &'a PasswordHasher) -> Self {
        hasher.metrics.queue_depth.inc();
        Self {
            hasher,
            since: Instant::now(),
        }
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.hasher.waiting.fetch_sub(1, Ordering::SeqCst);
        self.hasher.metrics.queue_depth.dec();
        self.hasher
            .metrics
            .queue_wait
            .observe(self.since.elapsed().as_secs_f64());
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
            let result = work();
            // The slot is free before the answer is: a client that logs in again as soon as
            // it has one must find the slot it just used free, not a 503.
            drop::<OwnedSemaphorePermit>(permit);
            let _ = done.send(result);
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
fn worker(jobs: &Mutex<mpsc::Receiver<Job>>, priority: HashingPriority) {
    lower_priority(priority);
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

/// Hashing yields the CPU to request handling. The default, SCHED_BATCH at nice 19, measured
/// best for request latency during a login storm: auth-service's own `GET /me` p99 1.81× idle
/// against 4.65× under SCHED_IDLE, which loses more across scheduling groups (the ingress, the
/// load generator) than it gains inside one: task-service's reads, in another process, had a p99
/// 4.5–5.3× idle under SCHED_IDLE against 1.0–2.4× at nice 19 (bench RESULTS, run 51). Hashing
/// still gets every cycle nobody else wants; a flood of instant refusals used to want them all,
/// which is what the refusal delay is for.
fn lower_priority(priority: HashingPriority) {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    let (policy, nice) = match priority {
        HashingPriority::Idle => (NormalThreadSchedulePolicy::Idle, 19),
        HashingPriority::Batch { nice } => (NormalThreadSchedulePolicy::Batch, nice),
    };
    let policy = ThreadSchedulePolicy::Normal(policy);
    // The crate maps 0..=99 onto nice 19..=-20; ask it which value is our nice.
    let priority = (0..=99u8)
        .filter_map(|value| ThreadPriorityValue::try_from(value).ok())
        .map(ThreadPriority::Crossplatform)
        .find(|priority| priority.to_posix(policy).ok() == Some(i32::from(nice)))
        .unwrap_or(ThreadPriority::Min);
    if let Err(error) = set_thread_priority_and_policy(thread_native_id(), priority, policy) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(max_queue: u32, refusal_delay_ms: u64, priority: HashingPriority) -> HashingArgs {
        HashingArgs {
            bcrypt_cost: 4,
            bcrypt_max_concurrency: Some(1),
            bcrypt_max_queue: Some(max_queue),
            bcrypt_queue_timeout_ms: 2000,
            bcrypt_refusal_delay_ms: refusal_delay_ms,
            bcrypt_priority: priority,
        }
    }

    /// How long a second `reserve` takes to be refused while the only slot is held.
    async fn time_to_refusal(hasher: &PasswordHasher) -> Duration {
        let _held = hasher.reserve().await.expect("the free slot");
        let started = tokio::time::Instant::now();
        let refused = hasher.reserve().await;
        assert!(
            matches!(refused, Err(HashError::Busy)),
            "a full queue refuses"
        );
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_holds_its_refusal_for_the_refusal_delay() {
        let hasher =
            PasswordHasher::start(&args(0, 700, HashingPriority::Idle), &Registry::new()).unwrap();
        assert_eq!(time_to_refusal(&hasher).await, Duration::from_millis(700));
        assert!(hasher.reserve().await.is_ok(), "the freed slot is taken");

        let at_once =
            PasswordHasher::start(&args(0, 0, HashingPriority::Idle), &Registry::new()).unwrap();
        assert_eq!(time_to_refusal(&at_once).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_hash_waits_for_the_slot_instead_of_being_refused() {
        let hasher = Arc::new(
            PasswordHasher::start(&args(1, 700, HashingPriority::Idle), &Registry::new()).unwrap(),
        );
        let held = hasher.reserve().await.unwrap();
        let queued = tokio::spawn({
            let hasher = Arc::clone(&hasher);
            async move {
                let started = tokio::time::Instant::now();
                let slot = hasher.reserve().await.map(|_| ());
                (slot, started.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        let (slot, waited) = queued.await.unwrap();
        assert!(slot.is_ok(), "the queued caller got the slot");
        assert_eq!(
            waited,
            Duration::from_millis(300),
            "as soon as it was freed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_cancelled_in_the_queue_gives_its_place_back() {
        let hasher = Arc::new(
            PasswordHasher::start(&args(2, 0, HashingPriority::Idle), &Registry::new()).unwrap(),
        );
        let held = hasher.reserve().await.unwrap();
        // Two requests queue for the held slot, then are cancelled (their clients hung up, or
        // the request timeout dropped them) before it is freed.
        for _ in 0..2 {
            let waiting = tokio::spawn({
                let hasher = Arc::clone(&hasher);
                async move { hasher.reserve().await.map(|_| ()) }
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
            waiting.abort();
            assert!(waiting.await.unwrap_err().is_cancelled());
        }
        assert_eq!(hasher.waiting.load(Ordering::SeqCst), 0);
        assert_eq!(hasher.metrics.queue_depth.get(), 0);
        // So the queue still takes two requests while the slot is busy; a leaked place each
        // would have refused them as a full queue.
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let hasher = Arc::clone(&hasher);
                tokio::spawn(async move { hasher.reserve().await.map(|_| ()) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        for request in queued {
            assert!(
                request.await.unwrap().is_ok(),
                "a queued request got the slot"
            );
        }
    }

    /// (nice, scheduling policy) of a new thread after `lower_priority(priority)`, from /proc.
    fn scheduling_after(priority: HashingPriority) -> (i64, u32) {
        std::thread::spawn(move || {
            lower_priority(priority);
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let (_, after_name) = stat.rsplit_once(')').unwrap();
            // Fields after the name start at field 3 (state); nice is 19, policy 41.
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            (fields[16].parse().unwrap(), fields[38].parse().unwrap())
        })
        .join()
        .unwrap()
    }

    #[test]
    fn hashing_threads_run_under_the_configured_scheduling() {
        const SCHED_BATCH: u32 = 3;
        const SCHED_IDLE: u32 = 5;
        assert_eq!(
            scheduling_after(HashingPriority::Batch { nice: 13 }),
            (13, SCHED_BATCH)
        );
        assert_eq!(
            scheduling_after(HashingPriority::Batch { nice: 0 }),
            (0, SCHED_BATCH)
        );
        assert_eq!(scheduling_after(HashingPriority::Idle).1, SCHED_IDLE);
    }

    #[test]
    fn bcrypt_priority_is_idle_or_a_nice_value() {
        assert_eq!("idle".parse(), Ok(HashingPriority::Idle));
        assert_eq!("0".parse(), Ok(HashingPriority::Batch { nice: 0 }));
        assert_eq!("19".parse(), Ok(HashingPriority::Batch { nice: 19 }));
        for bad in ["20", "-1", "batch", ""] {
            assert!(bad.parse::<HashingPriority>().is_err(), "{bad}");
        }
    }
}
