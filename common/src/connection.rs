//! One HTTP/1 connection's clock: whether it is waiting for a request head, handling requests or
//! idle between them, and when that phase has lasted too long (the header read timeout, the
//! keep-alive idle timeout).
//!
//! hyper has a `header_read_timeout`, but it starts as soon as hyper waits for a head, which on a
//! kept-alive connection is right after the previous response: it would close every idle
//! connection after the header timeout, long before a proxy's upstream keep-alive ends, and the
//! proxy would then send requests down connections we just closed. So both deadlines are kept
//! here: the header clock starts at a request's first byte (at the accept, for a connection's
//! first request), the idle clock when the last response has been handed to hyper.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::ServiceExt;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From a request's first byte to the end of its headers.
    pub header_read: Duration,
    /// Between the end of one response and the first byte of the next request.
    pub keepalive: Duration,
}

/// Which deadline a connection missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Header,
    Idle,
}

impl Expired {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head since then.
    Head(Instant),
    /// This many requests are being handled or having their responses written: no deadline here
    /// (`REQUEST_TIMEOUT_MS` bounds the handler, body reads included).
    Busy(usize),
    /// Nothing asked since then; the next byte starts a head.
    Idle(Instant),
}

/// Shared by the connection's IO (which sees bytes arrive), its service (which sees requests
/// start and responses end) and the task serving it (which waits for [`Clock::expired`]).
///
/// Each change wakes that task (`changed`), which is mostly the task making the change: three
/// extra polls of the connection a request. A clock that woke its waiter only at intervals
/// instead cut a single read's instructions by 7 %, but task reads' p99 during a login storm
/// rose from 1.85× idle to 2.97× (medians of four rounds side by side), so the wake-ups stay
/// (`deploy/bench/RESULTS.md`, run 48).
#[derive(Debug)]
pub struct Clock {
    phase: Mutex<Phase>,
    changed: Notify,
    timeouts: Timeouts,
}

impl Clock {
    /// A clock for a connection accepted now: its first head is due within the header timeout.
    pub fn start(timeouts: Timeouts) -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
            timeouts,
        })
    }

    /// Resolves once the current phase has outlasted its deadline.
    pub async fn expired(&self) -> Expired {
        loop {
            let Some((due, missed)) = self.deadline() else {
                self.changed.notified().await;
                continue;
            };
            if due <= Instant::now() {
                return missed;
            }
            // `notify_one` leaves a permit when nobody waits, so a change made between reading
            // the deadline and waiting here is not missed.
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = self.changed.notified() => {}
            }
        }
    }

    fn deadline(&self) -> Option<(Instant, Expired)> {
        match *self.phase() {
            Phase::Head(since) => Some((since + self.timeouts.header_read, Expired::Header)),
            Phase::Idle(since) => Some((since + self.timeouts.keepalive, Expired::Idle)),
            Phase::Busy(_) => None,
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, next: impl FnOnce(Phase) -> Option<Phase>) {
        let mut phase = self.phase();
        if let Some(next) = next(*phase) {
            *phase = next;
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Bytes came in: if the connection was idle, a request head has begun. Later bytes of the
    /// same head do not move the deadline, so trickling one header line at a time gains nothing.
    fn bytes_arrived(&self) {
        self.update(|phase| match phase {
            Phase::Idle(_) => Some(Phase::Head(Instant::now())),
            Phase::Head(_) | Phase::Busy(_) => None,
        });
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.update(|phase| match phase {
            Phase::Busy(n) => Some(Phase::Busy(n + 1)),
            Phase::Head(_) | Phase::Idle(_) => Some(Phase::Busy(1)),
        });
        InFlight(Arc::clone(self))
    }

    fn request_finished(&self) {
        self.update(|phase| match phase {
            Phase::Busy(n) if n > 1 => Some(Phase::Busy(n - 1)),
            _ => Some(Phase::Idle(Instant::now())),
        });
    }
}

/// A request from the moment hyper has parsed its head until its response body is dropped
/// (hyper drops it once the last byte is buffered for writing, or when the connection ends).
#[derive(Debug)]
struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The socket as hyper reads it, telling the clock when bytes arrive.
pub struct ClockedIo<T> {
    inner: T,
    clock: Arc<Clock>,
}

impl<T> ClockedIo<T> {
    pub fn new(inner: T, clock: Arc<Clock>) -> Self {
        Self { inner, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClockedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClockedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service: each request carries the peer address (so
/// `ConnectInfo<SocketAddr>` works) and keeps the connection busy until its response is written.
#[derive(Clone)]
pub struct ClockedService {
    router: Router,
    peer: SocketAddr,
    clock: Arc<Clock>,
}

impl ClockedService {
    pub fn new(router: Router, peer: SocketAddr, clock: Arc<Clock>) -> Self {
        Self {
            router,
            peer,
            clock,
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for ClockedService {
    type Response = hyper::Response<ClockedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.clock.request_started();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| ClockedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that marks its request finished when hyper is done with it.
pub struct ClockedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for ClockedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        keepalive: Duration::from_secs(75),
    };

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_its_first_head_within_the_header_timeout() {
        let clock = Clock::start(TIMEOUTS);
        let started = Instant::now();
        assert_eq!(clock.expired().await, Expired::Header);
        assert_eq!(started.elapsed(), TIMEOUTS.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn trickled_bytes_do_not_move_the_header_deadline() {
        let clock = Clock::start(TIMEOUTS);
        let started = Instant::now();
        let trickle = {
            let clock = Arc::clone(&clock);
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    clock.bytes_arrived();
                }
            }
        };
        tokio::select! {
            missed = clock.expired() => assert_eq!(missed, Expired::Header),
            () = trickle => unreachable!(),
        }
        assert_eq!(started.elapsed(), TIMEOUTS.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_gets_the_keepalive_timeout_and_a_new_head_the_header_timeout() {
        let clock = Clock::start(TIMEOUTS);
        drop(clock.request_started());
        let idle_from = Instant::now();
        assert_eq!(clock.expired().await, Expired::Idle);
        assert_eq!(idle_from.elapsed(), TIMEOUTS.keepalive);

        let clock = Clock::start(TIMEOUTS);
        drop(clock.request_started());
        tokio::time::sleep(Duration::from_secs(60)).await;
        clock.bytes_arrived();
        let head_from = Instant::now();
        assert_eq!(clock.expired().await, Expired::Header);
        assert_eq!(head_from.elapsed(), TIMEOUTS.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_while_the_waiter_sleeps_toward_the_idle_deadline_gets_the_header_timeout()
    {
        let clock = Clock::start(TIMEOUTS);
        drop(clock.request_started());
        let idle_from = Instant::now();
        // The waiter is already asleep when the head begins, 61 s into a 75 s idle deadline:
        // it must still end the connection 10 s later, not at the idle deadline.
        let head_begins = async {
            tokio::time::sleep(Duration::from_secs(61)).await;
            clock.bytes_arrived();
            std::future::pending::<()>().await;
        };
        let missed = tokio::select! {
            missed = clock.expired() => missed,
            () = head_begins => unreachable!(),
        };
        assert_eq!(missed, Expired::Header);
        assert_eq!(
            idle_from.elapsed(),
            Duration::from_secs(61) + TIMEOUTS.header_read
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_has_no_deadline_until_its_last_response_ends() {
        let clock = Clock::start(TIMEOUTS);
        let first = clock.request_started();
        let second = clock.request_started();
        let waited = tokio::time::timeout(Duration::from_secs(3600), clock.expired()).await;
        assert!(waited.is_err(), "no deadline while busy");
        drop(first);
        assert!(clock.deadline().is_none(), "still busy with the second");
        drop(second);
        assert_eq!(
            clock.deadline().map(|(_, missed)| missed),
            Some(Expired::Idle)
        );
    }
}
