//! The admin router: liveness, readiness (database, drain, revoked-sessions list) and metrics,
//! on a port the ingress never routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::Registry;
use sqlx::migrate::Migrator;

use crate::db::Db;
use crate::revocation::RevokedSessions;

/// The database must answer the readiness query within this long.
const READINESS_BUDGET: Duration = Duration::from_millis(500);

/// Set once SIGTERM arrives: readiness fails so the endpoints stop sending traffic.
#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
pub struct AdminState {
    pub db: Db,
    pub schema: &'static str,
    pub migrator: &'static Migrator,
    pub registry: Registry,
    pub draining: Draining,
    /// Not ready before its first load or past its maximum staleness (never, when off).
    pub revoked: RevokedSessions,
}

/// `/healthz`, `/readyz` and `/metrics`; a service merges its own admin routes into it.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Liveness: the process serves. Checks nothing else, so a database outage never restarts pods.
pub async fn healthz() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    // The database first: when it is down, that is the cause to report, not the stale list.
    let unready = if state.draining.is_draining() {
        Some("draining".to_owned())
    } else if !state
        .db
        .is_ready(state.schema, state.migrator, READINESS_BUDGET)
        .await
    {
        Some("database unavailable or not migrated".to_owned())
    } else {
        state.revoked.readiness().err()
    };
    let (status, reason) = match unready {
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
        None => (StatusCode::OK, "ready".to_owned()),
    };
    (status, axum::Json(serde_json::json!({"status": reason}))).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    state.db.refresh_gauges();
    crate::metrics::render(&state.registry)
}
