//! Running a service: two listeners (API and admin), and the shutdown sequence on SIGTERM —
//! readiness fails, serving goes on for the delay, in-flight requests drain up to the timeout,
//! background tasks stop, the admin port closes last.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::health::Draining;
use crate::http::HttpArgs;
use crate::listener::{ConnectionMetrics, Listener};

pub struct Server {
    api_listener: Listener,
    admin_listener: Listener,
    api: Router,
    admin: Router,
    draining: Draining,
    background: CancellationToken,
    delay: Duration,
    drain_timeout: Duration,
}

impl Server {
    /// Binds both listeners (port 0 picks a free port); both get the same connection limits.
    pub async fn bind(
        args: &HttpArgs,
        api: Router,
        admin: Router,
        draining: Draining,
        background: CancellationToken,
        connections: &ConnectionMetrics,
    ) -> anyhow::Result<Self> {
        let limits = args.connection_limits();
        let api_listener = Listener::bind(args.http_addr, "api", limits, connections)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on HTTP_ADDR {}: {e}", args.http_addr))?;
        let admin_listener = Listener::bind(args.admin_addr, "admin", limits, connections)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on ADMIN_ADDR {}: {e}", args.admin_addr))?;
        Ok(Self {
            api_listener,
            admin_listener,
            api,
            admin,
            draining,
            background,
            delay: Duration::from_secs(args.shutdown_delay_seconds),
            drain_timeout: Duration::from_secs(args.shutdown_timeout_seconds),
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_listener.local_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener.local_addr()
    }

    /// Serves until `stop` resolves, then shuts down in order.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()> + Send + 'static) {
        let drain_timeout = self.drain_timeout;
        let admin_stop = CancellationToken::new();
        let admin = tokio::spawn({
            let serve = self
                .admin_listener
                .serve_until(self.admin, admin_stop.clone().cancelled_owned());
            async move {
                if !serve.await.drain(drain_timeout).await {
                    tracing::warn!("admin connections outlasted the drain timeout");
                }
            }
        });

        let draining = self.draining.clone();
        let delay = self.delay;
        let graceful = async move {
            stop.await;
            draining.start();
            tracing::info!(
                delay_seconds = delay.as_secs(),
                "shutdown: readiness now fails; serving on until endpoints update"
            );
            tokio::time::sleep(delay).await;
        };
        let open = self.api_listener.serve_until(self.api, graceful).await;
        tracing::info!("shutdown: no new connections; draining in-flight requests");
        if !open.drain(drain_timeout).await {
            tracing::warn!(
                timeout_seconds = drain_timeout.as_secs(),
                "shutdown: drain timed out; dropping the remaining requests"
            );
        }
        self.background.cancel();
        admin_stop.cancel();
        let _ = admin.await;
        tracing::info!("shutdown complete");
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
