//! Accepting and serving connections on one listener: at most `max_connections` open at once
//! (beyond that new ones wait in the kernel's accept queue), each served as HTTP/1.1 by hyper
//! under its own [`Clock`] (header read and keep-alive idle timeouts), and all of them drained
//! together on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::connection::{Clock, ClockedIo, ClockedService, Expired, Timeouts};

/// Request line plus headers larger than this are refused (431) and the connection closed.
/// hyper's own bound is its ~400 KiB read buffer: 512 connections holding that much would not
/// fit the chart's memory limit, while at 32 KiB one costs about 55 KiB (measured). nginx, and
/// so ingress-nginx, takes no larger heads by default (4 buffers of 8 KiB).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
}

/// Connection metrics of every listener, labelled by `listener`.
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGaugeVec,
    max: IntGaugeVec,
    timeouts: IntCounterVec,
}

impl ConnectionMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let open = IntGaugeVec::new(
            Opts::new(
                "http_server_connections",
                "Open HTTP connections, by listener.",
            ),
            &["listener"],
        )?;
        let max = IntGaugeVec::new(
            Opts::new(
                "http_server_max_connections",
                "The cap on open HTTP connections (HTTP_MAX_CONNECTIONS), by listener.",
            ),
            &["listener"],
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new(
                "http_server_connection_timeouts_total",
                "Connections closed for a missed deadline, by listener and timeout (header: the \
                 request head took too long; idle: no request came within the keep-alive timeout).",
            ),
            &["listener", "timeout"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(max.clone()))?;
        registry.register(Box::new(timeouts.clone()))?;
        Ok(Self {
            open,
            max,
            timeouts,
        })
    }
}

/// One listener's handles on [`ConnectionMetrics`].
#[derive(Clone)]
struct ListenerMetrics {
    open: IntGauge,
    header_timeouts: IntCounter,
    idle_timeouts: IntCounter,
}

impl ListenerMetrics {
    fn new(metrics: &ConnectionMetrics, name: &str, max: usize) -> Self {
        metrics
            .max
            .with_label_values(&[name])
            .set(i64::try_from(max).unwrap_or(i64::MAX));
        Self {
            open: metrics.open.with_label_values(&[name]),
            header_timeouts: metrics
                .timeouts
                .with_label_values(&[name, Expired::Header.as_label()]),
            idle_timeouts: metrics
                .timeouts
                .with_label_values(&[name, Expired::Idle.as_label()]),
        }
    }

    fn timed_out(&self, missed: Expired) {
        match missed {
            Expired::Header => self.header_timeouts.inc(),
            Expired::Idle => self.idle_timeouts.inc(),
        }
    }
}

/// A bound listening socket, not yet accepting.
pub struct Listener {
    tcp: TcpListener,
    name: &'static str,
    limits: ConnectionLimits,
    metrics: ListenerMetrics,
}

impl Listener {
    /// Binds `addr`; `name` labels its metrics and log lines.
    pub async fn bind(
        addr: SocketAddr,
        name: &'static str,
        limits: ConnectionLimits,
        metrics: &ConnectionMetrics,
    ) -> io::Result<Self> {
        Ok(Self {
            tcp: TcpListener::bind(addr).await?,
            name,
            limits,
            metrics: ListenerMetrics::new(metrics, name, limits.max_connections),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves `router` until `stop` resolves, then closes the listening socket (new connections
    /// are refused from then on) and returns the connections still open.
    pub async fn serve_until(self, router: Router, stop: impl Future<Output = ()>) -> Open {
        let Self {
            tcp,
            name,
            limits,
            metrics,
        } = self;
        let timeouts = Timeouts {
            header_read: limits.header_read_timeout,
            keepalive: limits.keepalive_timeout,
        };
        let mut http = http1::Builder::new();
        // The connection's Clock keeps the header deadline; hyper's would also cut idle
        // kept-alive connections at the header timeout (see `connection`).
        http.header_read_timeout(None)
            .max_header_size(MAX_HEADER_BYTES);
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let graceful = GracefulShutdown::new();
        let abort = CancellationToken::new();
        let mut stop = pin!(stop);
        loop {
            let accepted = tokio::select! {
                () = &mut stop => break,
                accepted = accept(&tcp, &permits, name) => accepted,
            };
            let Some((stream, peer, permit)) = accepted else {
                continue;
            };
            let clock = Clock::start(timeouts);
            let io = TokioIo::new(ClockedIo::new(stream, Arc::clone(&clock)));
            let service = ClockedService::new(router.clone(), peer, Arc::clone(&clock));
            let connection = graceful.watch(http.serve_connection(io, service));
            let metrics = metrics.clone();
            let abort = abort.clone();
            metrics.open.inc();
            tokio::spawn(async move {
                tokio::select! {
                    served = connection => {
                        if let Err(error) = served {
                            tracing::debug!(%error, %peer, listener = name, "connection ended with an error");
                        }
                    }
                    missed = clock.expired() => {
                        metrics.timed_out(missed);
                        tracing::debug!(%peer, listener = name, timeout = missed.as_label(), "connection closed: timeout");
                    }
                    () = abort.cancelled() => {}
                }
                metrics.open.dec();
                drop(permit);
            });
        }
        drop(tcp);
        Open { graceful, abort }
    }
}

/// Waits for a free connection slot, then for a connection. While every slot is taken nothing
/// is accepted: new connections queue in the kernel (up to the listen backlog) and are served as
/// slots free up, instead of being refused during a short burst.
async fn accept(
    tcp: &TcpListener,
    permits: &Arc<Semaphore>,
    name: &str,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    match tcp.accept().await {
        Ok((stream, peer)) => Some((stream, peer, permit)),
        // The peer gave up before we accepted: nothing to do.
        Err(error) if is_connection_error(&error) => None,
        Err(error) => {
            // Out of file descriptors, most likely: retrying at once would spin.
            tracing::error!(%error, listener = name, "accept failed; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The connections of a listener that has stopped accepting.
pub struct Open {
    graceful: GracefulShutdown,
    abort: CancellationToken,
}

impl Open {
    /// Lets every connection finish its current request (idle ones close at once), for up to
    /// `timeout`; then drops whatever is left. Returns whether all finished in time.
    pub async fn drain(self, timeout: Duration) -> bool {
        let drained = tokio::time::timeout(timeout, self.graceful.shutdown())
            .await
            .is_ok();
        if !drained {
            self.abort.cancel();
        }
        drained
    }
}
