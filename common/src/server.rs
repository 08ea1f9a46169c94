//! Running a service: two listeners (API and admin), and the shutdown sequence on SIGTERM —
//! readiness fails, serving goes on for the delay, in-flight requests drain up to the timeout,
//! background tasks stop, the admin port closes last.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Draining;
use crate::http::HttpArgs;

pub struct Server {
    api_listener: TcpListener,
    admin_listener: TcpListener,
    api: Router,
    admin: Router,
    draining: Draining,
    background: CancellationToken,
    delay: Duration,
    drain_timeout: Duration,
}

impl Server {
    /// Binds both listeners (port 0 picks a free port).
    pub async fn bind(
        args: &HttpArgs,
        api: Router,
        admin: Router,
        draining: Draining,
        background: CancellationToken,
    ) -> anyhow::Result<Self> {
        let api_listener = TcpListener::bind(args.http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on HTTP_ADDR {}: {e}", args.http_addr))?;
        let admin_listener = TcpListener::bind(args.admin_addr)
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
        self.api_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `stop` resolves, then shuts down in order.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()> + Send + 'static) {
        let admin_stop = CancellationToken::new();
        let admin = tokio::spawn({
            let admin_stop = admin_stop.clone();
            let serve = axum::serve(self.admin_listener, self.admin)
                .with_graceful_shutdown(async move { admin_stop.cancelled().await });
            async move {
                if let Err(error) = serve.await {
                    tracing::error!(%error, "admin server failed");
                }
            }
        });

        let draining = self.draining.clone();
        let delay = self.delay;
        let drain_started = CancellationToken::new();
        let drain_started_tx = drain_started.clone();
        let graceful = async move {
            stop.await;
            draining.start();
            tracing::info!(
                delay_seconds = delay.as_secs(),
                "shutdown: readiness now fails; serving on until endpoints update"
            );
            tokio::time::sleep(delay).await;
            tracing::info!("shutdown: no new connections; draining in-flight requests");
            drain_started_tx.cancel();
        };
        let serve = axum::serve(
            self.api_listener,
            self.api.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(graceful);
        let drain_timeout = self.drain_timeout;
        tokio::select! {
            result = serve => {
                if let Err(error) = result {
                    tracing::error!(%error, "API server failed");
                }
            }
            () = async { drain_started.cancelled().await; tokio::time::sleep(drain_timeout).await } => {
                tracing::warn!(timeout_seconds = drain_timeout.as_secs(), "shutdown: drain timed out; dropping the remaining requests");
            }
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
